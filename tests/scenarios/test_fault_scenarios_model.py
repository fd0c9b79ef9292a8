"""Fault scenarios end to end with the real local model (llama.cpp) adding its reading.

The built-in investigation decides the cause and the fix (test_fault_scenarios.py); here the
pulled model also reads the evidence and may look further with read tools. Whatever it writes,
the four checks still pass, its reading is there in plain words (never the JSON its output
was held to), and the fix still waits for the operator's approval. Slow: ``-m slow`` selects it;
``scripts/test.sh`` pulls the model and sets ``MODEL_TESTS_DATA_DIR``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.scenarios import load_scenarios, run_scenario

from tests.conftest import pulled_model_dir

MODEL = "qwen2.5-coder-0.5b"
DEV = {s["id"]: s for s in load_scenarios("dev")}
READING = "The model's reading (check it against the evidence above): "

pytestmark = pytest.mark.slow


@pytest.mark.timeout(900)  # a real model on 2 cores, two scenarios
@pytest.mark.parametrize("scenario_id", ["d-web-stopped-502", "d-redis-stopped"])
async def test_with_the_real_model_the_fault_is_found_explained_and_fixed(tmp_path: Path, scenario_id: str) -> None:
    model = Path(pulled_model_dir(MODEL)) / "models" / f"{MODEL}.gguf"
    outcome = await run_scenario(DEV[scenario_id], tmp_path, provider=f"local:{model}")
    assert outcome.checks == {"detection": True, "localization": True, "root_cause": True, "mitigation": True}, \
        outcome.answer
    assert "Should I continue?" in outcome.answer
    reading = outcome.answer.split(READING, 1)[1] if READING in outcome.answer else ""
    assert reading.strip(), f"no model reading in: {outcome.answer}"
    assert not reading.lstrip().startswith("{") and '"answer"' not in reading, reading
