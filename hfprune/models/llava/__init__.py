"""The llava family: its model code and its adapter."""
