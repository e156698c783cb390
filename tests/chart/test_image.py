"""The Dockerfile builds what the chart runs: the user, the entry point, the version, OPA.

The image cannot be built on these machines (no container registry for the base images), so
these checks read the Dockerfile itself against the rendered chart and the project metadata.
"""

from __future__ import annotations

import re
import tomllib

import yaml

from tests.chart import chartfiles, render

DOCKERFILE = (chartfiles.ROOT / "Dockerfile").read_text()


def test_image_runs_as_the_user_the_pods_require() -> None:
    [user] = re.findall(r"^USER (\d+):(\d+)$", DOCKERFILE, re.MULTILINE)
    [deployment, *_] = render.every(render.documents("default"), "Deployment")
    pod = deployment["spec"]["template"]["spec"]["securityContext"]
    assert (int(user[0]), int(user[1])) == (pod["runAsUser"], pod["runAsGroup"])
    assert user[0] != "0"


def test_entry_point_is_the_command_the_containers_pass_arguments_to() -> None:
    assert re.search(r'^ENTRYPOINT \["gitwarden"\]$', DOCKERFILE, re.MULTILINE)
    for deployment in render.every(render.documents("default"), "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            if "command" in container:  # the OPA sidecar runs the image's other binary
                assert container["command"] == ["opa"]
                assert "/usr/local/bin/opa" in DOCKERFILE
            else:
                assert container["args"][0] in ("webhook", "reconcile")


def test_default_image_tag_is_the_project_version() -> None:
    chart = yaml.safe_load((render.CHART / "Chart.yaml").read_text())
    project = tomllib.loads((chartfiles.ROOT / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]
    image = render.every(render.documents("default"), "Deployment")[0]["spec"]["template"]
    assert image["spec"]["containers"][0]["image"] == f"gitwarden:{project['version']}"


def test_opa_and_python_packages_come_from_the_pinned_files() -> None:
    assert "COPY tools/go/opa/ ./" in DOCKERFILE
    assert "-mod=readonly" in DOCKERFILE
    assert "pip install --only-binary=:all: -c constraints.txt ." in DOCKERFILE
