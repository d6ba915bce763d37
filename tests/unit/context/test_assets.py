"""AssetIndex on a real folder: what is read and what never is (secrets, ignored, vendored and
outside files), how files are cut into sections, how sections rank, and live updates."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from codeagent_lsp.context.assets import (
    MAX_SECTION_CHARS,
    MAX_SECTION_LINES,
    AssetIndex,
    Section,
    query_terms,
    split_sections,
)
from codeagent_lsp.security.paths import DEFAULT_DENY, PathPolicy

CANARY = "sk-live-4f9a1c2e8b7d6a5f4e3d2c1b"
URL_PASSWORD = "hunter2pass"

OPENAPI = """\
openapi: 3.0.3
info:
  title: Accounts API
  version: 1.4.0
paths:
  /users/{id}:
    parameters:
      - name: id
        in: path
        required: true
        schema:
          type: string
    get:
      summary: Fetch one user by id
      operationId: getUser
      responses:
        '200':
          description: The user
          content:
            application/json:
              schema:
                $ref: '#/components/schemas/User'
        '404':
          description: No such user
    put:
      summary: Replace a user's profile
      operationId: updateUser
      requestBody:
        required: true
        content:
          application/json:
            schema:
              $ref: '#/components/schemas/UserUpdate'
      responses:
        '200':
          content:
            application/json:
              schema: { $ref: '#/components/schemas/User' }
  /invoices:
    post:
      summary: Issue an invoice
      operationId: createInvoice
      requestBody:
        content:
          application/json:
            schema:
              $ref: '#/components/schemas/Invoice'
      responses:
        '201':
          description: Created
components:
  schemas:
    User:
      type: object
      required: [id, email]
      properties:
        id:
          type: string
        email:
          type: string
          format: email
    UserUpdate:
      type: object
      properties:
        display_name:
          type: string
    Invoice:
      type: object
      properties:
        amount_cents:
          type: integer
"""

SCHEMA = """\
{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "Shipment",
  "type": "object",
  "required": ["tracking_number"],
  "properties": {
    "tracking_number": {"type": "string", "description": "Carrier tracking code"},
    "carrier": {"type": "string", "enum": ["ups", "dhl", "fedex"],
                "title": "Carrier", "description": "Who delivers the parcel"},
    "weight_grams": {"type": "integer", "minimum": 1}
  }
}
"""

SETTINGS = f"""\
title = "billing service"

[database]
url = "postgres://billing:{URL_PASSWORD}@db.internal:5432/billing"
pool_size = 10

[server]
host = "0.0.0.0"
port = 8080

[[workers]]
queue = "emails"
"""

APP = f"""\
name: billing
version: 3
# Feature switches, read at start.
features:
  new_checkout: true
  gift_cards: false
logging:
  level: info
  format: json
payments:
  provider: stripe
  stripe_api_key: {CANARY}
  webhook_secret: whsec_abcdef123456
"""

USAGE = """\
# Billing service

Intro text.

## Installation

Run the installer script.

```sh
# not a heading: inside a fence
make install
```

## Refunds

### Partial refunds

Partial refunds need the original invoice and an amount in cents.
"""


@pytest.fixture()
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "leak.md").write_text("# Leak\n\nOUTSIDE_ROOT_MARKER refunds invoices users\n")
    (folder / "leak.yaml").write_text("leak:\n  marker: OUTSIDE_ROOT_MARKER\n")
    return folder


@pytest.fixture()
def workspace(tmp_path: Path, outside: Path) -> Path:
    root = tmp_path / "repo"
    files = {
        "openapi.yaml": OPENAPI,
        "schema.json": SCHEMA,
        "config/settings.toml": SETTINGS,
        "app.yaml": APP,
        "docs/usage.md": USAGE,
        ".env": f"CANARY_SECRET={CANARY}\nDATABASE_URL=postgres://x:y@z/db\n",
        "config/.env.production": f"CANARY_SECRET={CANARY}\n",
        "keys/server.pem": f"-----BEGIN PRIVATE KEY-----\n{CANARY}\n-----END PRIVATE KEY-----\n",
        "secrets.yaml": f"refunds:\n  token: {CANARY}\n",
        "credentials/aws.json": f'{{"refunds": "{CANARY}"}}\n',
        "node_modules/x/README.md": "# Vendored\n\nVENDORED_MARKER refunds\n",
        "vendor/lib/config.yaml": "vendored:\n  marker: VENDORED_MARKER\n",
        ".venv/lib/site.yaml": "venv:\n  marker: VENDORED_MARKER\n",
        "envs/py311/pyvenv.cfg": "home = /usr/bin\n",
        "envs/py311/conf.yaml": "venv:\n  marker: VENDORED_MARKER\n",
        "build.yaml": "refunds:\n  marker: IGNORED_MARKER\n",
        "docs/drafts/notes.md": "# Draft\n\nIGNORED_MARKER refunds\n",
        ".gitignore": "build.yaml\n",
        "docs/.gitignore": "drafts/\n",
        "src/main.py": "print('not an asset')\n",
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    os.symlink(outside, root / "linked", target_is_directory=True)
    os.symlink(outside / "leak.md", root / "leak.md")
    os.symlink(root / ".env", root / "env.yaml")  # a harmless name for a denied file
    return root


@pytest.fixture()
def index(workspace: Path) -> AssetIndex:
    assets = AssetIndex([("repo", workspace)], PathPolicy())
    assets.refresh()
    return assets


def _paths(index: AssetIndex) -> set[str]:
    return {section.path for section in index.sections()}


def _titles(results: list[tuple[Section, float]]) -> list[str]:
    return [section.title for section, _ in results]


# --- what is read -------------------------------------------------------------------------------


def test_indexes_exactly_the_allowed_assets(index: AssetIndex) -> None:
    assert _paths(index) == {
        "openapi.yaml", "schema.json", "config/settings.toml", "app.yaml", "docs/usage.md"
    }  # fmt: skip


def test_no_secret_reaches_any_section(index: AssetIndex) -> None:
    for section in index.sections():
        for secret in (CANARY, "sk-live-4f9a", URL_PASSWORD, "whsec_abcdef123456"):
            assert secret not in section.text
            assert secret not in section.title


def test_redaction_keeps_the_setting_visible(index: AssetIndex) -> None:
    payments = next(s for s in index.sections() if s.title == "payments")
    assert "stripe_api_key: <redacted>" in payments.text
    assert "provider: stripe" in payments.text
    database = next(s for s in index.sections() if s.title == "database")
    assert "postgres://billing:<redacted>@db.internal:5432/billing" in database.text


def test_secrets_in_allowed_files_are_redacted(workspace: Path) -> None:
    github = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
    (workspace / "docs" / "deploy.md").write_text(
        "# Deploy\n\n```sh\nexport GITHUB_TOKEN=" + github + "\n```\n\n"
        "password: hunter2\nmax_tokens: 512\nsecret_ref: ${VAULT_SECRET}\n\n"
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----\n"
    )
    index = AssetIndex([("repo", workspace)], PathPolicy())
    index.refresh()
    deploy = next(s for s in index.sections() if s.path == "docs/deploy.md").text
    for secret in (github, "hunter2", "MIIEowIBAAKCAQEA"):
        assert secret not in deploy
    assert "max_tokens: 512" in deploy and "${VAULT_SECRET}" in deploy
    assert "<redacted private key>" in deploy


def test_never_indexes_denied_ignored_vendored_or_outside_files(index: AssetIndex) -> None:
    text = "\n".join(s.text for s in index.sections())
    for marker in ("OUTSIDE_ROOT_MARKER", "VENDORED_MARKER", "IGNORED_MARKER"):
        assert marker not in text
    for path in _paths(index):
        assert not path.startswith(("linked", "node_modules", "vendor", ".venv", "envs", "keys"))
    assert "leak.md" not in _paths(index) and "env.yaml" not in _paths(index)


def test_sizes_are_capped(workspace: Path) -> None:
    long_section = "# Long\n" + "\n".join(f"line {i} " + "x" * 30 for i in range(200))
    (workspace / "docs" / "long.md").write_text(long_section)
    (workspace / "docs" / "wide.md").write_text("# Wide\n" + "y" * 5000 + "\n")
    (workspace / "huge.yaml").write_text("huge:\n" + "  k: v\n" * 60_000)
    index = AssetIndex([("repo", workspace)], PathPolicy(), max_file_bytes=100_000)
    index.refresh()
    assert "huge.yaml" not in _paths(index)
    for section in index.sections():
        assert len(section.text) <= MAX_SECTION_CHARS
        assert section.text.count("\n") < MAX_SECTION_LINES
    long = next(s for s in index.sections() if s.title == "Long")
    assert long.text.startswith("# Long\nline 0")


def test_max_files(workspace: Path) -> None:
    index = AssetIndex([("repo", workspace)], PathPolicy(), max_files=2)
    assert index.refresh() == 2
    assert len(_paths(index)) == 2


# --- how files are cut --------------------------------------------------------------------------


def test_openapi_operations_and_schemas(index: AssetIndex) -> None:
    api = {s.title: s for s in index.sections() if s.path == "openapi.yaml"}
    assert set(api) == {
        "Accounts API", "GET /users/{id}", "PUT /users/{id}", "POST /invoices",
        "User", "UserUpdate", "Invoice",
    }  # fmt: skip
    get = api["GET /users/{id}"]
    assert get.kind == "openapi"
    assert get.text.splitlines() == [
        "GET /users/{id}  operationId: getUser",
        "summary: Fetch one user by id",
        "parameters: id (path, required, string)",
        "responses: 200 User, 404 No such user",
    ]
    assert "requestBody: UserUpdate" in api["PUT /users/{id}"].text
    assert "responses: 200 User" in api["PUT /users/{id}"].text  # from a flow mapping
    assert api["User"].kind == "schema"
    assert "  email: string (email)" in api["User"].text


def test_openapi_json_matches_yaml() -> None:
    spec = {
        "openapi": "3.1.0",
        "info": {"title": "T"},
        "paths": {"/users/{id}": {"get": {
            "operationId": "getUser",
            "parameters": [{"name": "id", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {"200": {"content": {"application/json": {
                "schema": {"type": "array", "items": {"$ref": "#/components/schemas/User"}}}}}},
        }}},
    }  # fmt: skip
    sections = {title: text for title, text, _ in split_sections("api.json", json.dumps(spec))}
    assert sections["GET /users/{id}"].splitlines() == [
        "GET /users/{id}  operationId: getUser",
        "parameters: id (path, required, string)",
        "responses: 200 User[]",
    ]


PETSTORE = """\
openapi: "3.0.0"
info:
  title: Petstore
  description: |
    A sample API.
paths:
  /pets:
    get:
      operationId: listPets
      tags:
        - pets
      parameters:
        - name: limit
          in: query
          schema:
            type: integer
            format: int32
        - $ref: '#/components/parameters/PageToken'
      responses:
        '200':
          content:
            application/json:    # a comment where the value would be
              schema:
                $ref: "#/components/schemas/Pets"
        default:
          description: unexpected error
  "/pets/{petId}":
    delete:
      responses:
        "204": {description: gone}
components:
  schemas:
    Pet:
      type: object
      required:
        - id
      properties:
        id: {type: integer}
    Pets:
      type: array
      items:
        $ref: "#/components/schemas/Pet"
"""


def test_openapi_yaml_by_indentation() -> None:
    sections = {title: text for title, text, _ in split_sections("pets.yaml", PETSTORE)}
    assert sections["Petstore"] == "Petstore\nA sample API."
    assert sections["GET /pets"].splitlines() == [
        "GET /pets  operationId: listPets",
        "parameters: limit (query, integer (int32)), PageToken",
        "responses: 200 Pets, default unexpected error",
    ]
    assert sections["DELETE /pets/{petId}"].splitlines()[1] == "responses: 204 gone"
    assert sections["Pet"] == "Pet: object\nrequired: id\n  id: integer"
    assert sections["Pets"] == "Pets: Pet[]"


def test_json_schema_by_property(index: AssetIndex) -> None:
    schema = {s.title: s for s in index.sections() if s.path == "schema.json"}
    assert set(schema) == {
        "Shipment", "Shipment.tracking_number", "Shipment.carrier", "Shipment.weight_grams"
    }  # fmt: skip
    carrier = schema["Shipment.carrier"].text
    assert carrier.splitlines()[0] == "Shipment.carrier: string"
    assert "Who delivers the parcel" in carrier and '"dhl"' in carrier
    assert "required" in schema["Shipment.tracking_number"].text.splitlines()[0]


def test_toml_by_table(index: AssetIndex) -> None:
    toml = {s.title: s.text for s in index.sections() if s.path == "config/settings.toml"}
    assert set(toml) == {"settings.toml", "database", "server", "workers"}
    assert toml["server"] == '[server]\nhost = "0.0.0.0"\nport = 8080'
    assert toml["workers"] == '[[workers]]\nqueue = "emails"'
    assert toml["settings.toml"] == 'title = "billing service"'


def test_yaml_by_top_level_key(index: AssetIndex) -> None:
    yaml = {s.title: s.text for s in index.sections() if s.path == "app.yaml"}
    assert set(yaml) == {"name, version", "features", "logging", "payments"}
    assert yaml["logging"] == "logging:\n  level: info\n  format: json"


def test_markdown_by_heading(index: AssetIndex) -> None:
    docs = {s.title: s.text for s in index.sections() if s.path == "docs/usage.md"}
    assert set(docs) == {
        "Billing service", "Billing service > Installation",
        "Billing service > Refunds > Partial refunds",  # "## Refunds" alone says nothing
    }  # fmt: skip
    assert "make install" in docs["Billing service > Installation"]
    assert docs["Billing service > Refunds > Partial refunds"].startswith("### Partial refunds")


def test_malformed_files_are_skipped(workspace: Path) -> None:
    (workspace / "broken.json").write_text("{not json")
    (workspace / "broken.toml").write_text("[unclosed\n")
    index = AssetIndex([("repo", workspace)], PathPolicy())
    index.refresh()
    assert not {"broken.json", "broken.toml"} & _paths(index)


# --- ranking ------------------------------------------------------------------------------------


def test_operation_ranks_first_for_its_words(index: AssetIndex) -> None:
    results = index.relevant(["get_user", "users", "user_id"], 5)
    assert _titles(results)[0] == "GET /users/{id}"
    scores = [score for _, score in results]
    assert scores == sorted(scores, reverse=True) and scores[-1] > 0


def test_api_path_literal_finds_its_operations(index: AssetIndex) -> None:
    results = index.relevant(["/users/{userId}", "updateProfile", "put"], 3)
    assert _titles(results)[0] == "PUT /users/{id}"


def test_toml_table_for_its_words(index: AssetIndex) -> None:
    (top, _), *_ = index.relevant(["database", "url"], 3)
    assert (top.kind, top.title) == ("toml", "database")
    assert index.relevant(["DATABASE_URL"], 1)[0][0].title == "database"


def test_markdown_section_by_heading_words(index: AssetIndex) -> None:
    results = index.relevant(["partial_refund", "refunds"], 3)
    assert _titles(results)[0] == "Billing service > Refunds > Partial refunds"


def test_json_schema_property(index: AssetIndex) -> None:
    results = index.relevant(["shipment", "tracking_number"], 3)
    assert _titles(results)[0] == "Shipment.tracking_number"


def test_unrelated_words_find_nothing(index: AssetIndex) -> None:
    assert index.relevant(["numpy", "eigenvalues", "matrixMultiply", "self", "return"], 5) == []
    assert index.relevant([], 5) == []
    assert index.relevant(["users"], 0) == []


def test_limit(index: AssetIndex) -> None:
    assert len(index.relevant(["user", "users", "invoice", "refund"], 2)) == 2


def test_exclude_text_drops_what_the_prompt_holds(index: AssetIndex) -> None:
    top = index.relevant(["database", "url"], 1)[0][0]
    prefix = "settings = load()\n" + top.text.replace("\n", "\n  ") + "\nconn = connect("
    titles = _titles(index.relevant(["database", "url"], 5, exclude_text=prefix))
    assert "database" not in titles
    assert "database" in _titles(index.relevant(["database", "url"], 5, exclude_text="x = 1"))


def test_query_terms() -> None:
    terms = query_terms(["getUserById", "DATABASE_URL", "/users/:id/", "self"])
    assert terms["get_user_by_id"] == 2.0 and terms["database_url"] == 2.0
    assert terms["/users/{}"] == 2.0
    assert terms["user"] == terms["database"] == 1.0
    assert "self" not in terms and "by" not in terms


# --- live updates -------------------------------------------------------------------------------


def test_refresh_path_adds_changes_and_drops(index: AssetIndex, workspace: Path) -> None:
    new = workspace / "docs" / "webhooks.md"
    new.write_text("# Webhooks\n\nRetries with exponential backoff.\n")
    assert index.refresh_path(new)
    assert _titles(index.relevant(["backoff"], 3)) == ["Webhooks"]
    new.write_text("# Webhooks\n\nDelivered at most once.\n")
    assert index.refresh_path(new)
    assert index.relevant(["backoff"], 3) == []
    new.unlink()
    assert index.refresh_path(new)  # gone from the disk: removed
    assert "docs/webhooks.md" not in _paths(index)


def test_refresh_path_refuses_what_refresh_would(index: AssetIndex, workspace: Path) -> None:
    (workspace / "config" / ".env.local").write_text(f"KEY={CANARY}\n")
    (workspace / "node_modules" / "x" / "api.yaml").write_text("api:\n  v: 1\n")
    (workspace / "build.yaml").write_text("build:\n  v: 2\n")
    for rel in ("config/.env.local", "node_modules/x/api.yaml", "build.yaml", "linked/leak.md"):
        assert not index.refresh_path(workspace / rel)
    assert not index.refresh_path(workspace.parent / "outside" / "leak.md")
    assert not index.refresh_path(workspace / "leak.md")  # a symlink out of the root
    assert _paths(index) == {
        "openapi.yaml", "schema.json", "config/settings.toml", "app.yaml", "docs/usage.md"
    }  # fmt: skip


def test_remove_path_file_and_folder(index: AssetIndex, workspace: Path) -> None:
    assert index.remove_path(workspace / "app.yaml")
    assert "app.yaml" not in _paths(index)
    assert index.remove_path(workspace / "config")
    assert "config/settings.toml" not in _paths(index)
    assert not index.remove_path(workspace / "config")
    assert index.relevant(["database", "url"], 3) == []


def test_refresh_path_folder(index: AssetIndex, workspace: Path) -> None:
    (workspace / "config" / "extra.yaml").write_text("retries:\n  max_attempts: 5\n  base: 2\n")
    assert index.refresh_path(workspace / "config")
    assert "config/extra.yaml" in _paths(index)
    assert _titles(index.relevant(["max_attempts"], 1)) == ["retries"]


def test_gitignore_change_rescans(index: AssetIndex, workspace: Path) -> None:
    (workspace / ".gitignore").write_text("build.yaml\napp.yaml\n")
    assert index.refresh_path(workspace / ".gitignore")
    assert "app.yaml" not in _paths(index)


# --- the path policy ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        ".env", "config/.env.production", "keys/server.pem", "a/b/tls.key", "id_rsa",
        "home/id_ed25519.pub", "store.p12", "cert.pfx", "app.keystore", "trust.jks",
        ".netrc", "web/.npmrc", ".pypirc", "credentials.json", "credentials/aws.yaml",
        "secrets.yaml", "config/app.secrets.json", "KEYS/SERVER.PEM", ".ENV",
        "../etc/passwd.yaml", "/etc/app.yaml", "", "./.env",
    ],
)  # fmt: skip
def test_policy_denies(path: str) -> None:
    assert not PathPolicy().allowed(path)


@pytest.mark.parametrize("path", ["app.yaml", "docs/usage.md", "environment.md", "keyboard.json"])
def test_policy_allows(path: str) -> None:
    assert PathPolicy().allowed(path)


def test_policy_defaults_cannot_be_lifted() -> None:
    policy = PathPolicy(deny=["!.env", "internal/"], allow=[".env", "*.yaml", "*.pem"])
    assert not policy.allowed(".env") and not policy.allowed("server.pem")
    assert not policy.allowed("internal/api.yaml")
    assert policy.allowed("api.yaml")
    assert not policy.allowed("README.md")  # allow narrows
    assert policy.allowed_dir("docs") and not policy.allowed_dir("internal")
    assert set(DEFAULT_DENY) <= set(PathPolicy(deny=[]).deny)
