"""Small pieces of the training loop: LR schedule, early stopping, checkpoints, metric logging.

The loop itself is :mod:`lora_audio.recipes.train_lora`.
"""
