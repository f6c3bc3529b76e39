"""Job settings as the tests build them: one dict of values serves every job kind of a track, each
kind taking the fields it declares (built, so missing or mistyped ones still fail)."""

from dataclasses import fields


def settings(kind, values: dict, **changes):
    names = {f.name for f in fields(kind)}
    return kind.build({k: v for k, v in {**values, **changes}.items() if k in names})
