"""render: templates and upstream manifests pinned by digest, checked, validated, ordered (no registry)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml

from archlift.cli import main
from archlift.errors import ConfigError
from archlift.lock import ReleaseLock
from archlift.steps.render import UpstreamFile, render

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "render"
DEMO_TEMPLATES = ROOT / "examples" / "demo" / "manifests"
DEMO_VALUES = {"namespace": "archlift-demo"}
UPSTREAM_NAMES = {"example.com/upstream/hello": "hello", "TOOLBOX_IMAGE": "toolbox"}


@pytest.fixture()
def lock() -> ReleaseLock:
    return ReleaseLock.read(FIXTURES / "release-a.json")


def write_templates(directory: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return directory


def problems_of(excinfo: pytest.ExceptionInfo[ConfigError]) -> str:
    return excinfo.value.message


POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: demo
spec:
  containers:
    - name: main
      image: {image}
"""


# --- the demo -------------------------------------------------------------------------------
def test_demo_renders_every_image_pinned_to_the_release(lock: ReleaseLock) -> None:
    out = render(lock, templates=DEMO_TEMPLATES, values=DEMO_VALUES)
    assert [name for name, _ in out.files] == [
        "0_namespace_archlift-demo.yaml",
        "2_configmap_archlift-demo_archlift-demo-release.yaml",
        "2_cronjob_archlift-demo_toolbox.yaml",
        "2_deployment_archlift-demo_hello.yaml",
        "2_serviceaccount_archlift-demo_archlift-demo.yaml",
    ]
    assert out.images() == sorted(str(c.ref) for c in lock.components.values())
    deployment = yaml.safe_load(dict(out.files)["2_deployment_archlift-demo_hello.yaml"])
    pod = deployment["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == str(lock.components["hello"].ref)
    assert pod["initContainers"][0]["image"] == str(lock.components["busybox"].ref)
    assert deployment["metadata"]["labels"]["app.kubernetes.io/version"] == "v1.0.0"


def test_rendering_twice_gives_identical_bytes(lock: ReleaseLock, tmp_path: Path) -> None:
    first = render(lock, templates=DEMO_TEMPLATES, values=DEMO_VALUES)
    # the same values in another order, and a fresh lock object: same bytes
    again = render(
        ReleaseLock.read(FIXTURES / "release-a.json"),
        templates=DEMO_TEMPLATES,
        values=dict(reversed(list({**DEMO_VALUES, "replicas": 1}.items()))),
    )
    assert first.files == again.files
    a, b = first.write(tmp_path / "a"), again.write(tmp_path / "b")
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [p.name for p in a]


def test_write_replaces_the_output_directory(lock: ReleaseLock, tmp_path: Path) -> None:
    out = tmp_path / "dist" / "manifests"
    out.mkdir(parents=True)
    (out / "stale.yaml").write_text("kind: Stale\n")
    render(lock, templates=DEMO_TEMPLATES, values=DEMO_VALUES).write(out)
    assert not (out / "stale.yaml").exists()
    assert sorted(p.name for p in tmp_path.joinpath("dist").iterdir()) == ["manifests"]  # no leftovers


def test_keys_are_sorted_and_multiline_strings_stay_literal(lock: ReleaseLock) -> None:
    out = render(lock, templates=DEMO_TEMPLATES, values=DEMO_VALUES)
    text = dict(out.files)["2_configmap_archlift-demo_archlift-demo-release.yaml"].decode()
    assert text.index("apiVersion:") < text.index("data:") < text.index("kind:") < text.index("metadata:")
    assert "release.txt: |\n    busybox 1.35 registry.example.com/demo/busybox@sha256:" in text


# --- upstream manifests ----------------------------------------------------------------------
def test_upstream_images_are_rewritten_by_digest(lock: ReleaseLock) -> None:
    out = render(
        lock,
        upstream=[UpstreamFile(FIXTURES / "upstream" / "install.yaml", "hello:install.yaml")],
        replacements=UPSTREAM_NAMES,
    )
    hello, toolbox, busybox = (str(lock.components[n].ref) for n in ("hello", "toolbox", "busybox"))
    docs = {d.title: d.body for d in out.documents}
    pod = docs["Deployment/hello-system/hello-operator"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == hello  # by name, tag ignored
    assert pod["initContainers"][0]["image"] == busybox  # the mirrored image, by its source name
    assert pod["containers"][0]["args"] == [f"--job-image={toolbox}", f"--helper-image={hello}", "--log-level=2"]
    data = docs["ConfigMap/hello-system/hello-images"]["data"]
    assert data["images.yaml"] == f"toolbox: {toolbox}\nhello: {hello}\n"  # an upstream digest is replaced too
    assert data["unrelated"] == "example.com/upstream/hello-docs is not an image of ours"


def test_namespaces_then_crds_then_the_rest(lock: ReleaseLock, tmp_path: Path) -> None:
    templates = write_templates(
        tmp_path / "t",
        {
            "a.yaml.j2": POD.format(name="zeta", image="{{ image('hello') }}")
            + "---\n"
            + POD.format(name="alpha", image="{{ image('hello') }}"),
            "b.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n",
        },
    )
    out = render(
        lock,
        templates=templates,
        upstream=[UpstreamFile(FIXTURES / "upstream" / "install.yaml", "install.yaml")],
        replacements=UPSTREAM_NAMES,
    )
    assert [d.title for d in out.documents] == [
        "Namespace/demo",
        "Namespace/hello-system",
        "CustomResourceDefinition/greetings.hello.example.com",
        "ConfigMap/hello-system/hello-images",
        "Deployment/hello-system/hello-operator",
        "Pod/demo/alpha",
        "Pod/demo/zeta",
    ]
    assert [n for n, _ in out.files] == sorted(d.file_name for d in out.documents)
    assert out.files[2][0] == "1_customresourcedefinition_greetings.hello.example.com.yaml"


def test_plain_yaml_is_taken_as_it_is(lock: ReleaseLock, tmp_path: Path) -> None:
    templates = write_templates(
        tmp_path / "t",
        {
            "cm.yaml": """\
                apiVersion: v1
                kind: ConfigMap
                metadata: {name: raw, namespace: demo}
                data: {template: "{{ .Values.keep }}", date: 2024-01-01}
                """,
            "_partial.yaml": "not: [a document\n",
        },
    )
    out = render(lock, templates=templates)
    assert out.documents[0].body["data"] == {"template": "{{ .Values.keep }}", "date": "2024-01-01"}


# --- complete or refuse ------------------------------------------------------------------------
def test_an_unknown_image_fails_naming_document_and_path(lock: ReleaseLock) -> None:
    with pytest.raises(ConfigError) as e:
        render(
            lock,
            upstream=[UpstreamFile(FIXTURES / "upstream" / "unknown-image.yaml", "vendor:unknown-image.yaml")],
            replacements=UPSTREAM_NAMES,
        )
    text = problems_of(e)
    assert (
        "CronJob/hello-system/cleanup (vendor:unknown-image.yaml, document 1): "
        "spec.jobTemplate.spec.template.spec.containers[1].image: 'quay.io/someone/cleanup:2.1' is a tag, not a digest"
    ) in text
    assert (
        "Rollout/hello-system/canary (vendor:unknown-image.yaml, document 2): spec.template.spec.containers[0].image: "
        "'ghcr.io/someone/app@sha256:1111111111111111111111111111111111111111111111111111111111111111' "
        "is not an image of the release"
    ) in text
    assert "containers[0].image" not in text.split("Rollout")[0]  # the rewritten hello is fine
    assert text.startswith("2 problem(s)")


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("{{ release.hello.repository }}:v1.0.0", "is a tag, not a digest (component 'hello')"),
        ("{{ release.hello.repository }}", "is a tag, not a digest (component 'hello')"),
        (
            "{{ release.hello.repository }}@{{ release.toolbox.digest }}",
            "is not the released digest of component 'hello'",
        ),
        (
            "registry.example.com/demo/hello@sha256:5a5eb5e5ee8e1e75ec0a0d6ff5e7e4a0fc14f0a9bd2f6e6ef4bc06ad5b6b2a69",
            "is not the released digest of component 'hello'",
        ),
    ],
)
def test_images_not_pinned_to_the_release_are_refused(
    lock: ReleaseLock, tmp_path: Path, image: str, expected: str
) -> None:
    templates = write_templates(tmp_path / "t", {"pod.yaml.j2": POD.format(name="p", image=image)})
    with pytest.raises(ConfigError) as e:
        render(lock, templates=templates)
    assert "Pod/demo/p (pod.yaml.j2, document 1): spec.containers[0].image: " in problems_of(e)
    assert expected in problems_of(e)


def test_a_platform_digest_is_refused_with_the_index_to_use(lock: ReleaseLock, tmp_path: Path) -> None:
    hello = lock.components["hello"]
    image = f"{hello.repository}@{hello.platforms['linux/arm64']}"
    templates = write_templates(tmp_path / "t", {"pod.yaml.j2": POD.format(name="p", image=image)})
    with pytest.raises(ConfigError) as e:
        render(lock, templates=templates)
    assert f"pins the linux/arm64 manifest only; use the index {hello.ref}" in problems_of(e)


def test_ephemeral_and_init_containers_are_checked(lock: ReleaseLock, tmp_path: Path) -> None:
    templates = write_templates(
        tmp_path / "t",
        {
            "ds.yaml.j2": """\
                apiVersion: apps/v1
                kind: DaemonSet
                metadata: {name: ds, namespace: demo}
                spec:
                  selector: {matchLabels: {a: b}}
                  template:
                    metadata: {labels: {a: b}}
                    spec:
                      initContainers: [{name: i, image: "busybox:1.35"}]
                      containers: [{name: c, image: "{{ image('busybox') }}"}]
                      ephemeralContainers: [{name: e, image: "busybox"}]
                """
        },
    )
    with pytest.raises(ConfigError) as e:
        render(lock, templates=templates)
    assert "spec.template.spec.initContainers[0].image: 'busybox:1.35' is a tag" in problems_of(e)
    assert "spec.template.spec.ephemeralContainers[0].image: 'busybox' is a tag" in problems_of(e)
    assert "containers[0]" not in problems_of(e).replace("Containers[0]", "")


def test_a_partial_lock_is_refused(lock: ReleaseLock) -> None:
    partial = ReleaseLock(lock.components, partial_platform="linux/arm64")
    with pytest.raises(ConfigError, match="partial"):
        render(partial, templates=DEMO_TEMPLATES, values=DEMO_VALUES)


def test_the_same_object_twice_is_refused(lock: ReleaseLock, tmp_path: Path) -> None:
    ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n"
    templates = write_templates(tmp_path / "t", {"a.yaml": ns, "b.yaml": ns})
    with pytest.raises(ConfigError) as e:
        render(lock, templates=templates)
    assert "Namespace/demo (b.yaml, document 1): the same object as Namespace/demo (a.yaml, document 1)" in (
        problems_of(e)
    )


# --- template errors and validation ---------------------------------------------------------------
def test_an_undefined_value_names_the_template_file_and_line(lock: ReleaseLock, tmp_path: Path) -> None:
    templates = write_templates(
        tmp_path / "t", {"pod.yaml.j2": POD.format(name="{{ values.name }}", image="{{ image('hello') }}")}
    )
    with pytest.raises(ConfigError) as e:
        render(lock, templates=templates, values={})
    assert f"{templates / 'pod.yaml.j2'}:4: 'dict object' has no attribute 'name'" in problems_of(e)


def test_a_syntax_error_names_the_template_file_and_line(lock: ReleaseLock, tmp_path: Path) -> None:
    templates = write_templates(tmp_path / "t", {"x.yaml.j2": "a: 1\nb: {{ values.x | }}\nc: 3\n"})
    with pytest.raises(ConfigError) as e:
        render(lock, templates=templates)
    assert "x.yaml.j2:2: template syntax error:" in problems_of(e)


def test_an_error_in_a_partial_names_the_partial(lock: ReleaseLock, tmp_path: Path) -> None:
    templates = write_templates(
        tmp_path / "t",
        {
            "_macros.j2": "{% macro img(n) %}\n{{ image(n) }}\n{% endmacro %}\n",
            "pod.yaml.j2": '{% from "_macros.j2" import img %}\n' + POD.format(name="p", image="{{ img('nope') }}"),
        },
    )
    with pytest.raises(ConfigError) as e:
        render(lock, templates=templates)
    text = problems_of(e)
    assert "_macros.j2:2: image('nope'): the release has no component 'nope' (it has: busybox, hello, toolbox)" in text
    assert "(rendering " in text and "pod.yaml.j2)" in text


def test_every_template_problem_is_reported_at_once(lock: ReleaseLock, tmp_path: Path) -> None:
    templates = write_templates(
        tmp_path / "t",
        {"a.yaml.j2": "x: {{ nope }}\n", "b.yaml.j2": "{% if %}\n", "c.yaml": "a: [1\n"},
    )
    with pytest.raises(ConfigError) as e:
        render(lock, templates=templates)
    text = problems_of(e)
    assert text.startswith("3 template problem(s)")
    assert "a.yaml.j2:1: 'nope' is undefined" in text
    assert "b.yaml.j2:1: template syntax error" in text
    assert "c.yaml: line 2: not valid YAML" in text


def test_an_invalid_document_names_file_index_kind_and_field(lock: ReleaseLock, tmp_path: Path) -> None:
    templates = write_templates(
        tmp_path / "t",
        {
            "svc.yaml.j2": """\
                apiVersion: v1
                kind: ConfigMap
                metadata: {name: fine, namespace: demo}
                ---
                apiVersion: v1
                kind: Service
                metadata: {name: web, namespace: demo}
                spec:
                  ports: [{port: "eighty"}]
                  selectr: {app: web}
                """
        },
    )
    with pytest.raises(ConfigError) as e:
        render(lock, templates=templates)
    text = problems_of(e)
    assert "Service/demo/web (svc.yaml.j2, document 2): spec.ports[0].port: 'eighty' is not of type 'integer'" in text
    assert "Kubernetes 1.30 schema" in text
    assert "ConfigMap" not in text


def test_custom_kinds_need_api_version_kind_and_name(lock: ReleaseLock, tmp_path: Path) -> None:
    templates = write_templates(
        tmp_path / "t",
        {
            "ok.yaml": "apiVersion: hello.example.com/v1\nkind: Greeting\nmetadata: {name: hi}\nspec: {any: thing}\n",
            "bad.yaml": "apiVersion: hello.example.com/v1\nkind: Greeting\nmetadata: {labels: {a: b}}\n",
            "typo.yaml": "apiVersion: apps/v1\nkind: Deploymnet\nmetadata: {name: x}\n",
        },
    )
    with pytest.raises(ConfigError) as e:
        render(lock, templates=templates)
    text = problems_of(e)
    assert "Greeting/? (bad.yaml, document 1): missing metadata.name" in text
    assert "Deploymnet/x (typo.yaml, document 1): Kubernetes 1.30 has no kind Deploymnet in apiVersion apps/v1" in text
    assert "ok.yaml" not in text


# --- the command ----------------------------------------------------------------------------------
def _project(
    tmp_path: Path,
    lock_file: Path,
    templates: dict[str, str] | None = None,
    *,
    components: str = "",
    upstream: str = "",
) -> Path:
    """A project: images.yaml (with ``components`` added), the demo templates (or ``templates``),
    the upstream install.yaml fixture (with ``upstream`` documents added) and ``lock_file``."""
    (tmp_path / "images.yaml").write_text(
        textwrap.dedent(
            """\
            registry: registry.example.com/demo
            components:
              hello: {source: {path: .}, replaces: [example.com/upstream/hello]}
              toolbox: {source: {path: .}, replaces: [TOOLBOX_IMAGE]}
              busybox: {mirror: "busybox:1.35"}
            """
        )
        + textwrap.indent(textwrap.dedent(components), "  ")
        + textwrap.dedent(
            """\
            manifests:
              templates: manifests/
              values: {namespace: archlift-demo}
              upstream: [{path: upstream/install.yaml}]
            """
        )
    )
    (tmp_path / "upstream").mkdir()
    install = (FIXTURES / "upstream" / "install.yaml").read_text()
    (tmp_path / "upstream" / "install.yaml").write_text(
        install + (f"---\n{textwrap.dedent(upstream)}" if upstream else "")
    )
    if templates is None:
        (tmp_path / "manifests").symlink_to(DEMO_TEMPLATES)
    else:
        write_templates(tmp_path / "manifests", templates)
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / "release.json").write_bytes(lock_file.read_bytes())
    return tmp_path


def test_cli_renders_templates_and_upstream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(_project(tmp_path, FIXTURES / "release-a.json"))
    assert main(["render"]) == 0
    written = sorted(p.name for p in (tmp_path / "dist" / "manifests").iterdir())
    assert len(written) == 9
    assert written[:2] == ["0_namespace_archlift-demo.yaml", "0_namespace_hello-system.yaml"]
    out = capsys.readouterr().out
    # counted in the files themselves: every occurrence of a release image, by digest
    lock = ReleaseLock.read(FIXTURES / "release-a.json")
    text = "".join(p.read_text() for p in (tmp_path / "dist" / "manifests").iterdir())
    counts = {name: text.count(str(c.ref)) for name, c in lock.components.items()}
    assert all(counts.values())
    assert f"to dist/manifests: {sum(counts.values())} reference(s) to 3 image(s), all pinned by digest:\n" in out
    for name, c in lock.components.items():
        n = counts[name]
        assert f"\n  {c.ref} ({n} reference{'s' if n > 1 else ''})\n" in out + "\n"


def test_cli_refuses_with_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(
        _project(tmp_path, FIXTURES / "release-a.json", {"pod.yaml.j2": POD.format(name="p", image="nginx:1.25")})
    )
    assert main(["render"]) == 2
    err = capsys.readouterr().err
    assert "archlift: invalid input:" in err
    assert "Pod/demo/p (pod.yaml.j2, document 1): spec.containers[0].image: 'nginx:1.25' is a tag" in err
    assert not (tmp_path / "dist" / "manifests").exists()


@pytest.mark.parametrize("version", ["1.20", "2.0", "latest"])
def test_an_unknown_kubernetes_version_is_refused(lock: ReleaseLock, version: str) -> None:
    with pytest.raises(ConfigError, match=f"no Kubernetes schemas for version '{version}'"):
        render(lock, templates=DEMO_TEMPLATES, values=DEMO_VALUES, kubernetes_version=version)


def test_the_kubernetes_version_chooses_the_schemas(lock: ReleaseLock, tmp_path: Path) -> None:
    # autoscaling/v2beta2 was removed in Kubernetes 1.26
    hpa = """\
        apiVersion: autoscaling/v2beta2
        kind: HorizontalPodAutoscaler
        metadata: {name: web, namespace: demo}
        spec: {scaleTargetRef: {kind: Deployment, name: web}, maxReplicas: 3}
        """
    templates = write_templates(tmp_path / "t", {"hpa.yaml": hpa})
    assert render(lock, templates=templates, kubernetes_version="v1.25").documents[0].kind == "HorizontalPodAutoscaler"
    with pytest.raises(ConfigError, match=r"Kubernetes 1\.30 has no kind HorizontalPodAutoscaler in apiVersion"):
        render(lock, templates=templates)


def test_cli_json_lists_documents_and_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(_project(tmp_path, FIXTURES / "release-a.json"))
    assert main(["render", "--json", "--out", "out/m"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["out"] == "out/m" and data["files"] == sorted(p.name for p in (tmp_path / "out" / "m").iterdir())
    lock = ReleaseLock.read(FIXTURES / "release-a.json")
    assert data["images"] == sorted(str(c.ref) for c in lock.components.values())
    assert {"file": "0_namespace_hello-system.yaml", "kind": "Namespace", "namespace": "", "name": "hello-system",
            "source": "upstream/install.yaml"} in data["documents"]  # fmt: skip


MISSING_COMPONENTS = """\
nomos: {source: {path: .}, replaces: [example.com/upstream/nomos]}
webhook: {source: {path: .}, replaces: [WEBHOOK_IMAGE]}
"""


def test_a_component_the_install_does_not_use_need_not_be_in_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """nomos and webhook have 'replaces:' but are not in the lock: no document names them."""
    monkeypatch.chdir(_project(tmp_path, FIXTURES / "release-a.json", components=MISSING_COMPONENTS))
    assert main(["render"]) == 0, capsys.readouterr().err
    assert "3 image(s), all pinned by digest" in capsys.readouterr().out


def test_every_reference_to_a_component_missing_from_the_lock_is_named_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pod = """\
        apiVersion: v1
        kind: Pod
        metadata: {name: extra, namespace: hello-system}
        spec:
          containers:
            - name: a
              image: example.com/upstream/nomos:v1
              args: [--webhook=WEBHOOK_IMAGE, --nomos=example.com/upstream/nomos]
        """
    monkeypatch.chdir(_project(tmp_path, FIXTURES / "release-a.json", components=MISSING_COMPONENTS, upstream=pod))
    assert main(["render"]) == 2
    err = capsys.readouterr().err
    where = "Pod/hello-system/extra (upstream/install.yaml, document 5)"
    assert err == (
        "archlift: invalid input: 3 reference(s) in the upstream manifests to component(s) the release lock "
        "does not have (nomos, webhook):\n"
        f"  {where}: spec.containers[0].image: 'example.com/upstream/nomos:v1' is component 'nomos'\n"
        f"  {where}: spec.containers[0].args[0]: 'WEBHOOK_IMAGE' is component 'webhook'\n"
        f"  {where}: spec.containers[0].args[1]: 'example.com/upstream/nomos' is component 'nomos'\n"
        "  build (or merge) a lock that includes them, or leave out of the install what references them\n"
    )
    assert not (tmp_path / "dist" / "manifests").exists()


def test_template_problems_and_missing_components_are_reported_together(lock: ReleaseLock, tmp_path: Path) -> None:
    templates = write_templates(tmp_path / "t", {"a.yaml.j2": POD.format(name="p", image="{{ image('nomos') }}")})
    (tmp_path / "install.yaml").write_text(POD.format(name="q", image="NOMOS_IMAGE"))
    with pytest.raises(ConfigError) as e:
        render(
            lock,
            templates=templates,
            upstream=[UpstreamFile(tmp_path / "install.yaml", "install.yaml")],
            replacements={"NOMOS_IMAGE": "nomos"},
        )
    text = problems_of(e)
    assert text.startswith("1 template problem(s) in ")
    assert "a.yaml.j2:9: image('nomos'): the release has no component 'nomos'" in text
    assert "\n1 reference(s) in the upstream manifests to component(s) the release lock does not have (nomos):" in text
    assert "Pod/demo/q (install.yaml, document 1): spec.containers[0].image: 'NOMOS_IMAGE' is component 'nomos'" in text


def test_the_summary_says_which_references_are_not_pinned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    configmap = """\
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: by-tag, namespace: demo}
        data:
          image: "{{ release.hello.repository }}:{{ release.hello.tags[0] }}"
        """
    monkeypatch.chdir(_project(tmp_path, FIXTURES / "release-a.json", {"cm.yaml.j2": configmap}))
    assert main(["render"]) == 0
    out = capsys.readouterr().out
    lock = ReleaseLock.read(FIXTURES / "release-a.json")
    hello = lock.components["hello"]
    text = "".join(p.read_text() for p in (tmp_path / "dist" / "manifests").iterdir())
    pinned = sum(text.count(str(c.ref)) for c in lock.components.values())
    assert f"{pinned + 1} reference(s) to 3 image(s), {pinned} pinned by digest, 1 not:\n" in out
    assert (
        f"  not pinned: '{hello.repository}:{hello.tags[0]}' in ConfigMap/demo/by-tag (cm.yaml.j2, document 1): "
        "data.image\n"
    ) in out
