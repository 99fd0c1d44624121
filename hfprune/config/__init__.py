"""Validated YAML documents: the schema machinery recipes and benchmark specs are built on (sections that refuse
unknown keys, one-line errors, safe YAML within limits) and the registry helpers of methods. Imports no plug-in."""
