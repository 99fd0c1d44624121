"""The lenet family: its model code and its adapter."""
