"""Secrets stay out of Airflow: a module handle's credentials never reach XComs, rendered templates, task logs or the Beam command line.

The credentials come from an Airflow connection (`schedule.module_conn_id`)
or from the workers' environment (`module_from_env`) and reach the embed
process through its environment; a scheduled config that holds credentials
itself is refused while the DAG folder is parsed. The module is served over
HTTPS, with Basic authorization and a token query parameter, by a real local
server, and the DAGs run in real Airflow processes (tests.fixtures.airflow_env).
"""

from __future__ import annotations

import base64
import datetime
import glob
import http.server
import ipaddress
import json
import os
import pathlib
import re
import shutil
import sqlite3
import ssl
import threading
import time
import urllib.parse

import pytest

from tests.fixtures import airflow_env
from tests.fixtures.airflow_env import dagbag, write_config, write_lines

airflow_env.activate()  # before anything imports airflow

pytestmark = pytest.mark.filterwarnings("ignore:GitWildMatchPattern:DeprecationWarning")

USER = "reader"
PASSWORD = "pw-5e1f0c9a7d3b"
TOKEN = "tok-8c2d4e6f0a1b"
BASIC = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
SECRETS = (PASSWORD, TOKEN, BASIC)
TEXTS = [f"sentence number {i} about {'apples' if i % 2 else 'cars'}" for i in range(8)]


# --------------------------------------------------------------------------- a private module server


def self_signed_certificate(folder: pathlib.Path) -> tuple[str, str]:
    """A certificate for 127.0.0.1 that is its own authority, and its key: (cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hub-embed test server")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_path), str(key_path)


class PrivateModuleServer:
    """HTTPS on 127.0.0.1 serving module archives only to requests with Basic authorization and `?token=`.

    `served` lists the paths it answered with an archive, `refused` those it
    answered 401.
    """

    def __init__(self, archives: dict[str, bytes], cert: str, key: str) -> None:
        self.served: list[str] = []
        self.refused: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                parts = urllib.parse.urlsplit(self.path)
                body = archives.get(parts.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                authorized = self.headers.get("Authorization") == f"Basic {BASIC}"
                if not authorized or urllib.parse.parse_qs(parts.query).get("token") != [TOKEN]:
                    server.refused.append(parts.path)
                    self.send_error(401, "Unauthorized")
                    return
                server.served.append(parts.path)
                self.send_response(200)
                self.send_header("Content-Type", "application/gzip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self.port = self._httpd.server_address[1]
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def private_server(tiny, tmp_path):
    """The tiny text module as versions 1 and 2 of `tiny` and as `env/1`, behind Basic auth and a token; and its CA file."""
    from pipelines.hub import archives

    archive = archives.pack_dir(tiny.text, str(tmp_path / "tiny.tar.gz"))
    body = pathlib.Path(archive).read_bytes()
    cert, key = self_signed_certificate(tmp_path)
    paths = ("/private/tiny/1.tar.gz", "/private/tiny/2.tar.gz", "/private/env/1.tar.gz")
    server = PrivateModuleServer(dict.fromkeys(paths, body), cert, key)
    server.ca_file = cert
    yield server
    server.close()


def assert_no_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a credential is in {where}"


def every_file_under(*roots: str) -> dict[str, bytes]:
    """path -> bytes of every file under `roots`."""
    found = {}
    for root in roots:
        for folder, _, names in os.walk(root):
            for name in names:
                path = os.path.join(folder, name)
                if os.path.isfile(path):
                    found[path] = pathlib.Path(path).read_bytes()
    return found


# --------------------------------------------------------------------------- refused while the DAGs are parsed


@pytest.mark.parametrize(
    "job, where",
    [
        ({"module": f"https://{USER}:{PASSWORD}@models.example.com/enc/3.tar.gz"}, "module holds a user name"),
        ({"module": f"https://models.example.com/enc/3.tar.gz?token={TOKEN}"}, "module holds query parameters"),
        ({"module": f"https://{TOKEN}@models.example.com/enc/3"}, "module holds a user name"),
        ({"beam": {"sdk_location": f"https://deploy:{PASSWORD}@example.com/beam.tar.gz"}}, "beam.sdk_location"),
        ({"input": f"postgresql://app:{PASSWORD}@db.example.com/texts"}, "input holds a user name"),
        ({"beam": {"s3_secret_access_key": PASSWORD}}, "Beam option s3_secret_access_key is a credential"),
    ],
)
def test_a_scheduled_config_holding_credentials_is_an_import_error_without_them(configs, job, where):
    values = {"input": "a.txt", "output": "b", "schedule": {"cron": "@daily"}, **job}
    path = write_config(configs, "private", **values)
    bag = dagbag()
    assert "embed__private" not in bag.dags
    messages = [m for m in bag.import_errors.values() if path in m]  # one per DAG file that reads the configs
    assert messages, bag.import_errors
    for message in messages:
        assert where in message and ("module_conn_id" in message or "AWS_SECRET_ACCESS_KEY" in message), message
        assert_no_secret(message, "the import error")


@pytest.mark.parametrize(
    "job, message",
    [
        ({"module": "gs://models/enc/3.tar.gz"}, "authenticates an http(s):// module handle"),
        (
            {"module": "https://models.example.com/enc/3.tar.gz", "module_from_env": "HANDLE"},
            "set schedule.module_conn_id or module_from_env, not both",
        ),
    ],
)
def test_a_module_connection_needs_an_http_handle_of_its_own(configs, job, message):
    path = write_config(
        configs, "private", input="a.txt", output="b", schedule={"cron": None, "module_conn_id": "models"}, **job
    )
    errors = dagbag().import_errors
    assert any(path in m and message in m for m in errors.values()), errors


@pytest.mark.parametrize(
    "value, found",
    [
        ("https://u:p@h/m.tar.gz", ["a user name or password (user:password@)"]),
        ("https://h/m?tf-hub-format=compressed&sig=x&token=y#f", ["query parameters ['sig', 'token']"]),
        ("https://[::1/m.tar.gz?token=y", ["query parameters ['token']"]),  # too malformed to parse
        ("https://h/m?tf-hub-format=compressed", []),
        ("gs://bucket/models/enc/3", []),
        ("/local/dir@2/module", []),
    ],
)
def test_what_counts_as_credentials(value, found):
    from pipelines.orchestration import credentials

    assert credentials.secrets_in(value) == found


def test_the_connection_adds_its_credentials_for_its_own_host_only():
    from airflow.sdk import Connection

    from pipelines.orchestration import credentials

    connection = Connection(
        conn_id="models",
        conn_type="http",
        host="models.example.com",
        login=USER,
        password=PASSWORD,
        extra=json.dumps({"query": {"token": TOKEN}}),
    )
    handle = credentials.authenticated_handle("https://models.example.com/enc/3.tar.gz", connection, "models")
    parts = urllib.parse.urlsplit(handle)
    assert (parts.username, parts.password, parts.hostname) == (USER, PASSWORD, "models.example.com")
    assert urllib.parse.parse_qs(parts.query) == {"token": [TOKEN]}
    assert set(credentials.secret_values(connection)) == {PASSWORD, TOKEN}
    for other, message in [
        ("https://elsewhere.example.com/enc/3.tar.gz", "is for host 'models.example.com'"),
        ("gs://models/enc/3.tar.gz", "only http(s)://"),
        (f"https://models.example.com/enc/3.tar.gz?token={TOKEN}", "holds credentials of its own"),
    ]:
        with pytest.raises(credentials.CredentialsError, match=re.escape(message)) as e:
            credentials.authenticated_handle(other, connection, "models")
        assert_no_secret(str(e.value), "the error")


# --------------------------------------------------------------------------- a real Airflow task run


@pytest.fixture(scope="session")
def airflow_db():
    """The metadata DB of this session's Airflow home, and its pristine `.template` copy."""
    return airflow_env.init_db()


def xcom_and_rendered_fields(db: str) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    """(task id, key, value) of every XCom, and (task id, rendered fields) of every task instance, from an Airflow DB."""
    with sqlite3.connect(db) as con:
        xcoms = [(task, key, str(value)) for task, key, value in con.execute("SELECT task_id, key, value FROM xcom")]
        rendered = [
            (task, str(fields))
            for task, fields in con.execute("SELECT task_id, rendered_fields FROM rendered_task_instance_fields")
        ]
    return xcoms, rendered


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_a_private_module_embeds_and_no_credential_reaches_airflow(
    airflow_db, configs, private_server, tmp_path, module_cache, monkeypatch
):
    """A connection's job, an environment job and a re-embedding run in real Airflow; no credential is left behind.

    Searched for the password, the token and the Basic authorization value:
    every file of the Airflow home (task logs, the components' logs, the
    metadata DB with its XComs and rendered template fields), the tables and
    the module cache.
    """
    module_url = private_server.url("/private/tiny/1.tar.gz")
    env_url = private_server.url("/private/env/1.tar.gz")
    secret_handle = env_url.replace("https://", f"https://{USER}:{PASSWORD}@") + f"?token={TOKEN}"
    inputs = write_lines(tmp_path / "in.txt", TEXTS)
    tables = tmp_path / "tables"
    schedule = {"cron": None}
    write_config(
        configs,
        "conn",
        input=inputs,
        output=str(tables / "conn"),
        module=module_url,
        schedule={**schedule, "module_conn_id": "hub_models"},
    )
    write_config(
        configs, "env", input=inputs, output=str(tables / "env"), module_from_env="PRIVATE_MODULE", schedule=schedule
    )
    bag = dagbag()
    assert bag.import_errors == {}
    assert {"embed__conn", "embed__env", "reembed_on_module_update"} <= set(bag.dags)

    home = tmp_path / "airflow-home"
    home.mkdir()
    shutil.copy(airflow_db + ".template", home / "airflow.db")
    connection = {
        "conn_type": "http",
        "host": "127.0.0.1",
        "login": USER,
        "password": PASSWORD,
        "extra": {"query": {"token": TOKEN}},
    }
    airflow = airflow_env.AirflowProcesses(
        str(home),
        {
            "HUB_EMBED_CONFIGS_DIR": str(configs),
            "HUB_EMBED_RETRIES": "0",
            "AIRFLOW_CONN_HUB_MODELS": json.dumps(connection),  # the environment secrets backend: never in the DB
            "PRIVATE_MODULE": secret_handle,
            "SSL_CERT_FILE": private_server.ca_file,
        },
    )
    deadline = time.monotonic() + 360

    def active(dag_id):
        def check():
            status, body = airflow.api("GET", f"dags/{dag_id}")
            return status == 200 and not body["is_paused"] and not body.get("is_stale")

        return check

    def finished(dag_id):
        def check():
            status, body = airflow.api("GET", f"dags/{dag_id}/dagRuns")
            runs = body.get("dag_runs", []) if status == 200 else []
            return next((run for run in runs if run["state"] in ("success", "failed")), None)

        return check

    def module_asset_id():
        status, body = airflow.api("GET", "assets?uri_pattern=hub-module://tiny")
        return status == 200 and next((a["id"] for a in body["assets"] if a["uri"] == "hub-module://tiny/"), None)

    airflow.start()
    try:
        airflow.wait_for("the API server", lambda: airflow.api("GET", "monitor/health")[0] == 200, deadline)
        for dag_id in ("embed__conn", "embed__env", "reembed_on_module_update"):
            airflow.wait_for(dag_id, active(dag_id), deadline)
        for dag_id in ("embed__conn", "embed__env"):
            status, body = airflow.api("POST", f"dags/{dag_id}/dagRuns", {"logical_date": None})
            assert status == 200, body
        extra = {"name": "tiny", "version": 2, "handle": private_server.url("/private/tiny/2.tar.gz")}
        asset_id = airflow.wait_for("the module asset", module_asset_id, deadline)
        status, body = airflow.api("POST", "assets/events", {"asset_id": asset_id, "extra": extra})
        assert status == 200, body
        runs = {
            dag_id: airflow.wait_for(f"a run of {dag_id}", finished(dag_id), deadline)
            for dag_id in ("embed__conn", "embed__env", "reembed_on_module_update")
        }
        logs = "\n".join(airflow.logs(n) for n in airflow.COMPONENTS)
        assert {dag_id: run["state"] for dag_id, run in runs.items()} == dict.fromkeys(runs, "success"), logs
    finally:
        airflow.stop()

    assert sorted(private_server.served) == [
        "/private/env/1.tar.gz",
        "/private/tiny/1.tar.gz",
        "/private/tiny/2.tar.gz",
    ]
    assert private_server.refused == []
    for folder in ("conn/*", "env/*", "conn/tiny-v2/*"):
        assert len(glob.glob(str(tables / folder / "_SUCCESS"))) == 1, folder

    # The Beam command line each embed task logged: the handle's source, never the handle.
    task_logs = {path: data.decode(errors="replace") for path, data in every_file_under(str(home / "logs")).items()}
    commands = [line for text in task_logs.values() for line in text.splitlines() if "Running command:" in line]
    assert len(commands) == 3, commands
    assert sum("--module_from_env=HUB_EMBED_MODULE_HANDLE" in c for c in commands) == 2, commands
    assert sum("--module_from_env=PRIVATE_MODULE" in c for c in commands) == 1, commands
    assert not any("--module=" in c for c in commands), commands

    xcoms, rendered = xcom_and_rendered_fields(str(home / "airflow.db"))
    assert {task for task, _, _ in xcoms} == {
        "plan",
        "module_updates",
        "conn.plan",
        "record_table",
        "conn.record_table",
    }
    plans = [json.loads(value) for task, key, value in xcoms if task.endswith("plan") and key == "return_value"]
    assert sorted(str(plan["module"]) for plan in plans) == sorted(
        [module_url, private_server.url("/private/tiny/2.tar.gz"), "None"]
    )
    assert any(task == "embed" and module_url in fields for task, fields in rendered), rendered
    for task, key, value in xcoms:
        assert_no_secret(value, f"the XCom {key} of {task}")
    for task, fields in rendered:
        assert_no_secret(fields, f"the rendered template fields of {task}")
    written = every_file_under(str(home), str(tables), str(module_cache))
    assert any(path.endswith(".log") for path in written)
    for path, data in written.items():
        assert_no_secret(data.decode("latin-1"), path)
