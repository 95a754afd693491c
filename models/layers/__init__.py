"""Layers shared by the models."""
