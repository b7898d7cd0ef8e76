"""The VRAM ledger: a host's instances planned together per GPU, at build time and at start."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hydra_fleet.launcher import cli, ledger, preflight
from hydra_fleet.launcher.cli import main
from tests.launcher.conftest import instance

GIB = 1024**3
MI50 = {"vendor": "amd", "model": "MI50", "vramGiB": 32, "arch": "gfx906", "index": 0}
QWEN3_8B = {"weightsBytes": 5 * GIB, "layers": 36, "kvHeads": 8, "headDim": 128}
QWEN_14B = {"weightsBytes": 9 * GIB, "layers": 48, "kvHeads": 8, "headDim": 128}


def write(tmp_path: Path, name: str, **keys: Any) -> Path:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"name": name, "gpus": [MI50], **keys}))
    return path


def ollama(tmp_path: Path, context: int = 8192) -> Path:
    return write(
        tmp_path,
        "ollama",
        engine="ollama",
        port=11434,
        model="qwen3:8b",
        contextLength=context,
        modelInfo=QWEN3_8B,
    )


def llama(tmp_path: Path, context: int = 32768) -> Path:
    return write(
        tmp_path,
        "coder",
        engine="llama-cpp",
        port=8080,
        model="/var/lib/models/qwen-14b.gguf",
        contextLength=context,
        modelInfo=QWEN_14B,
    )


def test_host_l_fits_its_mi50(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Ollama 8B + llama.cpp 14B at 32K on one 32 GiB MI50: planned together, it fits."""
    args = ["check", "--static", "--config", str(ollama(tmp_path))]
    args += ["--config", str(llama(tmp_path))]
    assert main(args) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "amd:0 MI50:" in out
    assert "(ok)" in out


def test_overcommitted_card_fails_with_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each alone fits the card; together they do not: 78 and the per-GPU table."""
    one = ollama(tmp_path, context=65536)
    two = llama(tmp_path, context=65536)
    for path in (one, two):
        assert main(["check", "--static", "--config", str(path)]) == 0
    capsys.readouterr()
    assert main(["check", "--static", "--config", str(one), "--config", str(two)]) == 78
    captured = capsys.readouterr()
    assert "amd:0 MI50:" in captured.out
    assert "OVERCOMMITTED" in captured.out
    assert "  ollama " in captured.out
    assert "  coder " in captured.out
    assert "headroom" in captured.out
    assert "hydra-launch: gpus: amd:0 MI50 is overcommitted: ollama, coder" in captured.err


def test_static_check_reads_no_model_or_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """In the Nix sandbox neither the model nor the key exists: --static plans from modelInfo."""
    path = llama(tmp_path)
    config = json.loads(path.read_text())
    config["apiKeyFile"] = "/run/secrets/absent"
    path.write_text(json.dumps(config))
    assert main(["check", "--static", "--config", str(path)]) == 0, capsys.readouterr().err
    assert main(["check", "--config", str(path)]) == 78


def test_plan_shows_the_whole_host(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = [ollama(tmp_path, 65536), llama(tmp_path, 65536)]
    code = main(["plan", "--json", *[a for p in paths for a in ("--config", str(p))]])
    out = json.loads(capsys.readouterr().out)
    assert code == 78
    assert [i["instance"] for i in out["instances"]] == ["ollama", "coder"]
    (card,) = out["gpus"]
    assert card["overcommitted"] is True
    assert card["totalBytes"] > card["capacityBytes"] == 32 * GIB
    assert [h["instance"] for h in card["instances"]] == ["ollama", "coder"]


def test_siblings_planned_memory_is_taken_at_start(tmp_path: Path) -> None:
    """At run time the card looks empty (Ollama loads lazily), but its plan is counted."""
    sibling = json.loads(ollama(tmp_path, context=65536).read_text())
    siblings = tmp_path / "siblings.json"
    siblings.write_text(json.dumps({"ollama": sibling}))
    coder = instance(
        name="coder",
        engine="llama-cpp",
        model="/m/coder.gguf",
        contextLength=65536,
        gpus=[MI50],
        modelInfo=QWEN_14B,
        siblingsFile=str(siblings),
    )
    alone = preflight.run(coder, None)
    assert alone.fit.fits
    together = preflight.run(coder, None, siblings=ledger.load_siblings(coder, "coder.json"))
    assert not together.fit.fits
    refusal = [p for p in together.fatal if p.startswith("contextLength:")]
    assert refusal
    assert "left by its siblings" in refusal[0]
    assert any("planned for ollama (siblingsFile)" in n for n in together.notes)


def test_run_refuses_what_its_siblings_planned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run` with siblingsFile: 78 before starting anything, though the card is empty."""
    monkeypatch.setattr(cli, "_probe", lambda _: None)
    siblings = tmp_path / "siblings.json"
    siblings.write_text(json.dumps({"ollama": json.loads(ollama(tmp_path, 65536).read_text())}))
    coder = llama(tmp_path, context=65536)
    config = json.loads(coder.read_text())
    config |= {"siblingsFile": str(siblings), "modelInfo": QWEN_14B, "model": "models/coder.gguf"}
    coder.write_text(json.dumps(config))
    assert main(["check", "--static", "--config", str(coder)]) == 0
    assert main(["run", "--config", str(coder)]) == 78
    err = capsys.readouterr().err
    assert "contextLength: context 65536 does not fit" in err
    assert "left by its siblings" in err
    assert "does not exist" not in err
