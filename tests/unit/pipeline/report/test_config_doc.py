"""docs/config.md is generated from the config dataclasses and must match them."""

from __future__ import annotations

import dataclasses
import re

from pipeline.config import RunConfig
from pipeline.report import config_doc


def _keys(cls: type, prefix: str = "") -> list[str]:
    out = []
    for f in dataclasses.fields(cls):
        out.append(prefix + f.name)
        tp = config_doc.typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            out += _keys(tp, f"{prefix}{f.name}.")
    return out


def test_docs_config_md_is_up_to_date():
    assert config_doc.DOC_PATH.exists(), "docs/config.md missing: run python -m pipeline.report.config_doc"
    assert config_doc.DOC_PATH.read_text() == config_doc.render_config_doc(), (
        "docs/config.md is stale: run python -m pipeline.report.config_doc"
    )


def test_every_key_has_a_row_with_type_default_and_meaning():
    cells = [re.split(r"(?<!\\)\|", line) for line in config_doc.render_config_doc().splitlines()
             if line.startswith("| `")]
    rows = {c[1].strip().strip("`"): [x.strip() for x in c[2:5]] for c in cells}
    keys = _keys(RunConfig)
    assert "train.dense_init" in keys and "train.device" in keys
    for key in keys + ["extends"]:
        assert key in rows, key
        typ, default, meaning = rows[key]
        assert typ and default and meaning, (key, rows[key])
    assert "auto" in rows["dense_reference"][2] and "run directory" in rows["dense_reference"][2]


def test_metadata_doc_and_domain_are_used():
    @dataclasses.dataclass(frozen=True)
    class Probe:
        rate: float = dataclasses.field(default=0.5, metadata={"doc": "how fast", "domain": "[0, 1]"})
        plain: int = 3  # a comment meaning

    rows = config_doc._rows(Probe, "p.")
    assert rows[0] == ["`p.rate`", "float", "`0.5`", "how fast", "domain: [0, 1]"]
    assert rows[1][3] == "a comment meaning"


def test_check_mode_reports_stale(tmp_path, monkeypatch):
    monkeypatch.setattr(config_doc, "DOC_PATH", tmp_path / "config.md")
    assert config_doc.main(["--check"]) == 1
    assert config_doc.main([]) == 0
    assert config_doc.main(["--check"]) == 0
    (tmp_path / "config.md").write_text("old\n")
    assert config_doc.main(["--check"]) == 1
