"""Example DAGs of airflow-provider-baseten, and ``run_demo`` (``make demo``) that runs them against the emulator."""
