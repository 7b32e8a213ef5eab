"""Instruction generation: domain corpus, task pool, teachers, DAIG prompts and filters."""
