"""The recipe layer: a validated YAML recipe (``schema``) and the model it names (``model``)."""
