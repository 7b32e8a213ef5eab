"""The controller: the only package that imports generation/, training/ and eval/."""
