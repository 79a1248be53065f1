"""The common-ai extra is optional: without it the provider imports and the hook module says how to install it."""

from __future__ import annotations

import subprocess
import sys

#: Imports of common.ai's hook and of pydantic-ai fail, as in an environment without the extra.
BLOCK_COMMON_AI = (
    "import sys\nsys.modules['airflow.providers.common.ai.hooks.pydantic_ai'] = sys.modules['pydantic_ai'] = None\n"
)


def python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)


def test_without_common_ai_the_hook_module_raises_the_optional_feature_error() -> None:
    run = python(
        BLOCK_COMMON_AI + "from airflow.providers.common.compat.sdk import AirflowOptionalProviderFeatureException\n"
        "import airflow_provider_baseten.operators.baseten, airflow_provider_baseten.hooks.baseten\n"
        "try:\n"
        "    import airflow_provider_baseten.hooks.pydantic_ai\n"
        "except AirflowOptionalProviderFeatureException as err:\n"
        "    print(err)\n"
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "pip install 'airflow-provider-baseten[common-ai]'" in run.stdout


def test_the_rest_of_the_provider_never_imports_pydantic_ai() -> None:
    """Airflow's provider discovery reads common.ai's ``get_provider_info``; its hooks and pydantic-ai stay out."""
    run = python(
        "import sys\n"
        "import airflow_provider_baseten.operators.baseten, airflow_provider_baseten.hooks.baseten\n"
        "import airflow_provider_baseten.get_provider_info as info; info.get_provider_info()\n"
        "heavy = ('pydantic_ai', 'airflow.providers.common.ai.hooks', 'openai')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "[]"
