"""What the Airflow DAGs in `dags/` import; Airflow, PyYAML and the standard library only at DAG parse time.

`project` (root, folders, interpreter), `defaults` (what every DAG shares),
`discovery` (scheduled job configs), `assets` (module and table Assets),
`plans` (a run's table and the table it reuses), `credentials` (credentials
found in configs, added from a connection), `operators` (the Beam pipeline
operator), `embedding_tasks` and `release_tasks` (the DAGs' tasks).
"""
