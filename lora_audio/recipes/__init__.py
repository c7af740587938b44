"""Training recipes: one readable file per way of training (see train_lora)."""
