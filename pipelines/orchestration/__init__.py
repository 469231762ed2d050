"""What the Airflow DAGs use: asset names, config discovery, operators and tasks (no TensorFlow import)."""
