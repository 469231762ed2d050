"""hub-embed: batch embeddings with TensorFlow Hub modules, Apache Beam and Apache Airflow.

When the process is one of the project's commands (`python -m pipelines.<command>`
or the `hub-embed` script), its console is made quiet here, before the command
module's own imports (TensorFlow's among them) run: see `pipelines.console`.
Importing the package as a library changes nothing.
"""

from pipelines import console as _console

_console.setup_for_command()
