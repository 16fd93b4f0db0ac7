"""The document is the server (API-01; issue 12): schemathesis's conformance checks, in
accepted and rejected inputs, on every operation of the served document, against a live
orchestrator with a real pool and API keys.

schemathesis's own runner does it (`schemathesis run`, every check, positive and negative
data; the deterministic coverage phase, the document's examples and a bounded fuzzing
phase within `FUZZ_TIME_S`). `test_schema_fuzz` is the long fuzz of the data plane; this
one is the quick sweep of every operation: documented status codes (a malformed
`X-Correlation-Id` is a 400 everywhere), response schemas and content types (OpenAI's
error body on `/v1/`), `Allow` on 405, missing or invalid authentication refused,
schema-invalid input refused (`null`, overlong ids) and schema-valid input accepted
(`8.0` for an integer).

Rules the schema cannot state are documented on their operation, and only there a 400
(or 422) counts as a correct answer to schema-valid data: `POSITIVE_ALSO` names them,
with the rule. A 503 is back-pressure with `Retry-After` (required by the document, so
checked), not a server error: a fuzzed drain makes the pool unready for what follows.
The pool's context is small (256) so that no schema-valid `max_tokens` runs for long:
a larger one is refused at admission (400 CONTEXT_OVERFLOW, a documented rule).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from ci_harness.cluster import Cluster, tiny_pool

from specs import openapi_document

pytestmark = pytest.mark.integration
ADMIN_KEY = "conformance-admin-key-5b1f0c7e"
FUZZ_TIME_S = 25
FUZZ_EXAMPLES = 3
# operationId -> (statuses that also accept schema-valid data, the documented rule)
POSITIVE_ALSO: dict[str, tuple[list[int], str]] = {
    "getCapabilities": ([400], "an api_version range the server is outside"),
    "putDeployment": ([400], "replicas.min must not exceed replicas.max"),
    "detokenize": ([400], "ids outside the model's vocabulary"),
    "tokenize": ([400], "text over max_prompt_bytes"),
    "submitTask": (
        [400, 422],
        "grammar/json_schema/context rules; a parameter no pool honours (UNSUPPORTED_PARAM); "
        "Idempotency-Key reused",
    ),
    "openaiChatCompletions": (
        [400, 422],
        "json_schema/tools/context rules (a call that breaks its tool's parameters: 422); a "
        "field no pool honours or not listed (UNSUPPORTED_PARAM); Idempotency-Key reused",
    ),
    "openaiCompletions": (
        [400, 422],
        "context rules; a field no pool honours or not listed (UNSUPPORTED_PARAM); "
        "Idempotency-Key reused",
    ),
    "openaiEmbeddings": (
        [400],
        "dimensions other than the model's embedding size; a field not listed (UNSUPPORTED_PARAM)",
    ),
    "reloadPool": ([400, 422], "a deployment's pool; the new model did not load"),
}
POSITIVE_DEFAULT = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]


def _config(path: Path) -> Path:
    lines = [
        "[checks.not_a_server_error]",
        'expected-statuses = ["2xx", "3xx", "4xx", "503"]',
        "",
    ]
    # The status stream runs until the client leaves unless `count` ends it: every
    # call sends one snapshot and ends (a call without it would wait out its timeout).
    lines += [
        "[[operations]]",
        'include-operation-id = "streamStatus"',
        'parameters = { "query.count" = 1 }',
        "",
    ]
    for operation_id, (statuses, _rule) in sorted(POSITIVE_ALSO.items()):
        allowed = POSITIVE_DEFAULT + [str(s) for s in statuses]
        lines += [
            "[[operations]]",
            f'include-operation-id = "{operation_id}"',
            f"checks.positive_data_acceptance.expected-statuses = {allowed!r}".replace("'", '"'),
            "",
        ]
    path.write_text("\n".join(lines))
    return path


@pytest.fixture(scope="module")
def cluster(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    key = {
        "name": "conformance",
        "key_sha256": hashlib.sha256(ADMIN_KEY.encode()).hexdigest(),
        "role": "admin",
    }
    cluster = Cluster(
        tmp_path_factory.mktemp("conformance"),
        {"host-a": [tiny_pool("tiny-a", tiny_model, ctx=256, slots=2, embeddings=True)]},
        {"queue_capacity": 256, "api_keys": [key]},
        {"host-a": {"models": [{"id": "tiny", "path": str(tiny_model)}]}},
        {"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    cluster.start()
    yield cluster
    assert all(code == 0 for code in cluster.stop().values()), cluster.logs()


def test_every_operation_conforms_to_the_served_document_in_accepted_and_rejected_inputs(
    cluster: Cluster, tmp_path: Path
) -> None:
    served = httpx.get(f"{cluster.url}/openapi.json", timeout=10)
    assert served.status_code == 200, served.text
    assert served.json() == yaml.safe_load(openapi_document())
    operations = sum(1 for item in served.json()["paths"].values() for _ in item)
    # From a file: given the URL, schemathesis leaves the document's own operation out.
    document = tmp_path / "openapi.json"
    document.write_bytes(served.content)
    config = _config(tmp_path / "schemathesis.toml")

    def schemathesis(*options: str, timeout_s: float) -> tuple[str, float]:
        command = [
            str(Path(sys.executable).parent / "schemathesis"),
            "--no-color",
            "--config-file",
            str(config),
            "run",
            str(document),
            "--url",
            cluster.url,
            "--header",
            f"Authorization: Bearer {ADMIN_KEY}",
            "--checks",
            "all",
            "--mode",
            "all",
            "--request-timeout",
            "20",
            "--workers",
            "1",
            "--seed",
            "20261207",
            "--suppress-health-check",
            "all",
            *options,
        ]
        began = time.monotonic()
        run = subprocess.run(
            command, cwd=tmp_path, capture_output=True, text=True, timeout=timeout_s
        )
        output = run.stdout + run.stderr
        assert run.returncode == 0, output[-20000:]
        return output, time.monotonic() - began

    # Every operation through the deterministic phases, whole; then fuzzing, bounded.
    covered, covering_s = schemathesis("--phases", "examples,coverage", timeout_s=120)
    assert f"Tested: {operations}" in covered, covered[-4000:]
    fuzzed, fuzzing_s = schemathesis(
        "--phases",
        "fuzzing",
        "--max-examples",
        str(FUZZ_EXAMPLES),
        "--max-time",
        str(FUZZ_TIME_S),
        timeout_s=FUZZ_TIME_S + 60,
    )
    assert "Tested: " in fuzzed, fuzzed[-4000:]
    print(f"coverage {covering_s:.0f} s, fuzzing {fuzzing_s:.0f} s")
