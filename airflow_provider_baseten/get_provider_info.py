"""Provider registration, read by Airflow's providers manager through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_provider_baseten import __version__

#: Connection extras declared as form fields; ``hooks.connection`` parses the same keys.
CONN_FIELDS: dict[str, dict[str, Any]] = {
    "auth_scheme": {
        "label": "Auth scheme",
        "description": "How the key is sent: 'Api-Key' (default) or 'Bearer'.",
        "schema": {"type": ["string", "null"], "enum": ["Api-Key", "Bearer"]},
    },
    "timeout": {
        "label": "Read timeout (s)",
        "description": "Read timeout for predict-like calls. Default 1230 s, just above Baseten's 1200 s server "
        "timeout, so Baseten's own 504 arrives first.",
        "schema": {"type": ["number", "null"], "minimum": 1},
    },
    "connect_timeout": {
        "label": "Connect timeout (s)",
        "description": "Connect timeout for every call. Default 10 s.",
        "schema": {"type": ["number", "null"], "minimum": 0.1},
    },
    "max_retries": {
        "label": "Max retries",
        "description": "Retries of 429/503/529 and connect errors (and 500/502/504 for reads). Default 5.",
        "schema": {"type": ["integer", "null"], "minimum": 0, "maximum": 20},
    },
    "verify": {
        "label": "Verify TLS",
        "description": "true/false, or the path of a CA bundle. Default true.",
        "schema": {"type": ["string", "boolean", "null"]},
    },
    "proxy": {
        "label": "Proxy URL",
        "description": "HTTP(S) proxy for every call, e.g. http://proxy.internal:3128.",
        "schema": {"type": ["string", "null"], "format": "password"},
    },
    "headers": {
        "label": "Extra headers (JSON)",
        "description": 'Extra request headers as a JSON object, e.g. {"X-Team": "ml"}. Authorization and Host '
        "cannot be set here.",
        "schema": {"type": ["object", "string", "null"], "format": "password"},
    },
    "status_rate_limit": {
        "label": "Status polls per second",
        "description": "Shared budget of status polls per second for all Baseten triggers of one triggerer "
        "process. Default 15, below Baseten's 20 req/s limit.",
        "schema": {"type": ["number", "null"], "minimum": 0.1},
    },
}

#: The ``pydanticai_baseten`` connection (common.ai): no key of its own, it names a ``baseten`` connection.
PYDANTIC_AI_CONN_FIELDS: dict[str, dict[str, Any]] = {
    "baseten_conn_id": {
        "label": "Baseten connection",
        "description": "The baseten connection whose key, gateway URL, headers, proxy, TLS and timeouts are used. "
        "Default baseten_default.",
        "schema": {"type": ["string", "null"]},
    },
    "model": {
        "label": "Model",
        "description": "A Model APIs slug, e.g. baseten:deepseek-ai/DeepSeek-V3.1; with a deployed model ID, the "
        "model name its server expects (default: the model ID).",
        "schema": {"type": ["string", "null"]},
    },
    "model_id": {
        "label": "Deployed model ID",
        "description": "Call a model you deployed (its /sync/v1 OpenAI-compatible route) instead of Model APIs.",
        "schema": {"type": ["string", "null"]},
    },
    "environment": {
        "label": "Environment",
        "description": "With a deployed model ID: production (default), development or a named environment.",
        "schema": {"type": ["string", "null"]},
    },
    "deployment_id": {
        "label": "Deployment ID",
        "description": "With a deployed model ID: pin one deployment instead of an environment.",
        "schema": {"type": ["string", "null"]},
    },
    "regional": {
        "label": "Regional endpoint",
        "description": "With a deployed model ID: use the regional host model-{id}-{environment}.api.baseten.co.",
        "schema": {"type": ["boolean", "null"]},
    },
    "fallback_conn_ids": {
        "label": "Fallback Connections",
        "description": "Connection IDs to fail over to, in order, while this model is unavailable (any pydanticai "
        "connection type).",
        "schema": {"type": ["array", "null"], "items": {"type": "string"}},
    },
}

PYDANTIC_AI_UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "login", "password", "host", "port"],
    "relabeling": {},
    "placeholders": {
        "extra": '{"baseten_conn_id": "baseten_default", "model": "baseten:deepseek-ai/DeepSeek-V3.1"}',
    },
}


#: The ``[baseten]`` section of Airflow's configuration (``AIRFLOW__BASETEN__<OPTION>`` in the environment).
CONFIG: dict[str, Any] = {
    "baseten": {
        "description": "Settings of the Baseten provider.",
        "options": {
            "output_location": {
                "description": "Base URI of what Baseten tasks write for other tasks and for their own retries: "
                "batch outputs ({location}/baseten-batches/..., baseten-embeddings/..., baseten-scores/...) and "
                "large predict, chain and chat results "
                "({location}/baseten-results/...). Any ObjectStoragePath URI (s3://bucket/prefix, gs://..., "
                "file:///shared/mount). Empty: results go to XCom and a batch needs output_path. With the Celery, "
                "Kubernetes or Edge executor use a location every worker reaches: a local path warns in the log.",
                "version_added": "0.2.0",
                "type": "string",
                "example": "s3://my-bucket/airflow/baseten",
                "default": "",
            },
        },
    },
}


def get_provider_info() -> dict[str, Any]:
    """Describe this provider to Airflow: hooks, operators, triggers, sensors, connection type and links."""
    return {
        "package-name": "airflow-provider-baseten",
        "name": "Baseten",
        "description": "Run Baseten inference from Airflow: predict, chains, wake, chat, batch and async predict.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Baseten",
                "external-doc-url": "https://docs.baseten.co/",
                "tags": ["ml"],
            }
        ],
        "hooks": [
            {"integration-name": "Baseten", "python-modules": ["airflow_provider_baseten.hooks.baseten"]},
        ],
        "operators": [
            {"integration-name": "Baseten", "python-modules": ["airflow_provider_baseten.operators.baseten"]},
        ],
        "sensors": [
            {"integration-name": "Baseten", "python-modules": ["airflow_provider_baseten.sensors.baseten"]},
        ],
        "triggers": [
            {"integration-name": "Baseten", "python-modules": ["airflow_provider_baseten.triggers.baseten"]},
        ],
        "connection-types": [
            {
                "hook-class-name": "airflow_provider_baseten.hooks.baseten.BasetenHook",
                "hook-name": "Baseten",
                "connection-type": "baseten",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "login", "extra"],
                    "relabeling": {"password": "API Key", "host": "Gateway URL (optional)"},
                    "placeholders": {
                        "password": "abcd1234.abcd1234",
                        "host": "empty for Baseten; http://127.0.0.1:8765 for the local emulator",
                        "port": "from the gateway URL",
                    },
                },
                "conn-fields": CONN_FIELDS,
            },
            {
                # Needs the common-ai extra; without it the hook module raises Airflow's optional-feature error.
                "hook-class-name": "airflow_provider_baseten.hooks.pydantic_ai.PydanticAIBasetenHook",
                "hook-name": "Pydantic AI (Baseten)",
                "connection-type": "pydanticai_baseten",
                "ui-field-behaviour": PYDANTIC_AI_UI_FIELD_BEHAVIOUR,
                "conn-fields": PYDANTIC_AI_CONN_FIELDS,
            },
        ],
        "config": CONFIG,
        "extra-links": [
            "airflow_provider_baseten.operators.baseten.BasetenModelLink",
            "airflow_provider_baseten.operators.baseten.BasetenChainLink",
            "airflow_provider_baseten.operators.baseten.BasetenAsyncRequestLink",
        ],
    }
