"""Preprocessing steps that turn recordings into training material (cut-music, latent cache)."""
