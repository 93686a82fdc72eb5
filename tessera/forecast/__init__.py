"""The demand engine: online forecasters per series (``engine``) and their models."""

#: The models a series blends, by name (``models.build_models``). Here, not in ``models``,
#: so that a command listing them (``tessera forecast --help``) does not import River.
MODEL_NAMES = ("last", "holt_winters", "snarimax", "direct_ar", "calendar_linear", "calendar_mlp")


def check_models(names) -> None:
    """Refuse a blend naming no model or one not in ``MODEL_NAMES``, saying what to choose
    (here, so that callers which never forecast check names without importing River)."""
    unknown = [n for n in names if n not in MODEL_NAMES]
    if unknown or not names:
        what = f"unknown model(s) {', '.join(unknown)}" if unknown else "forecast models: none given"
        raise ValueError(f"{what}; choose one or more of {', '.join(MODEL_NAMES)}")
