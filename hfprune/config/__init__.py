"""Configuration: the recipe schema and the validated-YAML machinery it shares with benchmark specs."""
