"""The demand engine: online forecasters per series (``engine``) and their models."""

#: The models a series blends, by name (``models.build_models``). Here, not in ``models``,
#: so that a command listing them (``tessera forecast --help``) does not import River.
MODEL_NAMES = ("last", "holt_winters", "snarimax", "direct_ar", "calendar_linear", "calendar_mlp")
