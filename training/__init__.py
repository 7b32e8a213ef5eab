"""LoRA supervised fine-tuning of the student (trl + peft), loss on the answer only."""
