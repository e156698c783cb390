"""The reconciler's configuration file: one home per setting, clear errors naming file and key."""

from __future__ import annotations

import dataclasses
import pathlib

import pytest

from reconciler import config, configdoc
from webhook import config as webhook_config

ANCHOR = "a" * 40
README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def write(tmp_path: pathlib.Path, text: str) -> pathlib.Path:
    path = tmp_path / "gitwarden.yaml"
    path.write_text(text)
    return path


MINIMAL = f"""
source:
  url: https://git.example.test/org/repo.git
trust:
  anchor: {ANCHOR}
  allowed_signers: trust/allowed_signers
"""


def test_a_minimal_file_gets_defaults_and_paths_relative_to_the_file(
    tmp_path: pathlib.Path,
) -> None:
    loaded = config.load(write(tmp_path, MINIMAL))
    assert loaded.source.branch == "main"
    assert loaded.source.paths == (".",)
    assert loaded.trust.allowed_signers == tmp_path.resolve() / "trust/allowed_signers"
    assert loaded.apply == config.ApplyConfig()
    assert loaded.identity.name == "gitwarden"


def test_every_key_is_read(tmp_path: pathlib.Path) -> None:
    text = (
        MINIMAL
        + """
  commit_policy_dir: /etc/policies
  commit_policy_data: data.json
source_extra: null
"""
    )
    text = text.replace("source_extra: null\n", "")
    text += """apply:
  prune: false
  protected_kinds: [Namespace]
  default_namespace: team
  qps: 5
identity:
  name: prod
"""
    text = text.replace(
        "  url: https", "  paths: [./apps/, infra]\n  branch: release\n  url: https"
    )
    loaded = config.load(write(tmp_path, text))
    assert loaded.source.paths == ("apps", "infra")
    assert loaded.source.branch == "release"
    assert loaded.trust.commit_policy_dir == pathlib.Path("/etc/policies")
    assert loaded.trust.commit_policy_data == tmp_path.resolve() / "data.json"
    assert (loaded.apply.prune, loaded.apply.protected_kinds) == (False, ("Namespace",))
    assert loaded.apply.qps == 5.0
    assert loaded.identity.name == "prod"


def test_a_local_repository_path_is_resolved_against_the_file(tmp_path: pathlib.Path) -> None:
    loaded = config.load(
        write(tmp_path, MINIMAL.replace("https://git.example.test/org/repo.git", "repo"))
    )
    assert loaded.source.url == str(tmp_path.resolve() / "repo")
    scp = MINIMAL.replace("https://git.example.test/org/repo.git", "git@host.test:org/repo.git")
    assert config.load(write(tmp_path, scp)).source.url == "git@host.test:org/repo.git"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("  url: https://git.example.test/org/repo.git\n", ""),
            r"source.url: missing \(required\)",
        ),
        ((f"  anchor: {ANCHOR}\n", ""), r"trust.anchor: missing \(required\)"),
        ((f"  anchor: {ANCHOR}", "  anchor: main"), "trust.anchor: must be a full commit id"),
        ((f"  anchor: {ANCHOR}", "  anchor: " + "A" * 40), "trust.anchor: must be a full commit"),
        (
            (f"  anchor: {ANCHOR}", "  anchor: 1234"),
            "trust.anchor: must be a non-empty string, not a int",
        ),
        (
            ("trust:", "trust:\n  colour: blue"),
            r"trust.colour: unknown key \(known: allowed_signers",
        ),
        (("source:", "sauce: {}\nsource:"), r"gitwarden.yaml: sauce: unknown key"),
        (
            ("source:", "apply: {prune: 'yes'}\nsource:"),
            "apply.prune: must be true or false, not a string",
        ),
        (
            ("source:", "apply: {concurrency: true}\nsource:"),
            "apply.concurrency: must be an integer",
        ),
        (
            ("source:", "apply: {concurrency: 0}\nsource:"),
            "apply.concurrency: must be between 1 and 64",
        ),
        (
            ("source:", "apply: {qps: -1}\nsource:"),
            r"apply.qps: must not be negative \(0 turns the limit off\)",
        ),
        (
            ("source:", "apply: {protected_kinds: Namespace}\nsource:"),
            "apply.protected_kinds: must be a list",
        ),
        (
            ("source:", "apply: {default_namespace: Team_1}\nsource:"),
            "apply.default_namespace: must be",
        ),
        (("source:", "identity: {name: 'a/b'}\nsource:"), "identity.name: must be an object name"),
        (("trust:", "identity: [1]\ntrust:"), "identity: must be a mapping, not a list"),
        (("  url:", "  paths: [../up]\n  url:"), r"source.paths: '../up': must not contain '..'"),
        (("  url:", "  paths: [/abs]\n  url:"), "source.paths: '/abs': must be relative"),
        (
            ("  url:", "  paths: [apps, apps/web]\n  url:"),
            "source.paths: 'apps' and 'apps/web' overlap",
        ),
        (
            ("  url:", "  branch: 'a..b'\n  url:"),
            "source.branch: 'a..b' is not a valid branch name",
        ),
        (("  url:", "  username_file: u\n  url:"), "username_file and password_file go together"),
        (("  allowed_signers: trust/allowed_signers\n", ""), "trust: set allowed_signers and/or"),
        (("  allowed_signers:", "  commit_policy_dir: p\n  allowed_signers:"), "go together"),
    ],
)
def test_bad_settings_are_refused_naming_file_and_key(
    tmp_path: pathlib.Path, change: tuple[str, str], message: str
) -> None:
    old, new = change
    assert old in MINIMAL
    path = write(tmp_path, MINIMAL.replace(old, new, 1))
    with pytest.raises(config.ConfigError, match=message) as caught:
        config.load(path)
    assert str(caught.value).startswith(f"{path}: ")


def test_a_key_given_twice_is_refused_not_silently_overridden(tmp_path: pathlib.Path) -> None:
    text = MINIMAL.replace(f"  anchor: {ANCHOR}\n", f"  anchor: {ANCHOR}\n  anchor: {'b' * 40}\n")
    with pytest.raises(config.ConfigError, match=r"line 6: not valid YAML: duplicate key 'anchor'"):
        config.load(write(tmp_path, text))


def test_unreadable_or_broken_files_are_clear_errors(tmp_path: pathlib.Path) -> None:
    with pytest.raises(config.ConfigError, match="cannot read"):
        config.load(tmp_path / "absent.yaml")
    with pytest.raises(config.ConfigError, match="line 3: not valid YAML"):
        config.load(write(tmp_path, "source:\n  url: x\n  - y\n"))
    with pytest.raises(config.ConfigError, match="must be a mapping"):
        config.load(write(tmp_path, "- a\n"))


def test_every_setting_has_help() -> None:
    for section, cls in config.SECTIONS:
        for spec in dataclasses.fields(cls):
            assert spec.metadata.get("help", "").strip(), f"{section}.{spec.name} has no help"


def test_a_setting_without_help_fails_the_generator(monkeypatch: pytest.MonkeyPatch) -> None:
    @dataclasses.dataclass(frozen=True)
    class Undocumented:
        knob: int = 1

    monkeypatch.setattr(config, "SECTIONS", (*config.SECTIONS, ("extra", Undocumented)))
    with pytest.raises(ValueError, match=r"setting extra\.knob has no help text"):
        list(configdoc.settings())


def test_the_readme_table_is_the_generated_one() -> None:
    text = README.read_text()
    start, end = text.index(configdoc.BEGIN), text.index(configdoc.END) + len(configdoc.END)
    assert text[start:end] == configdoc.markdown_table(), (
        "regenerate with configdoc.markdown_table()"
    )


def test_help_text_lists_every_key() -> None:
    text = configdoc.help_text()
    for setting in configdoc.settings():
        assert f"  {setting.key} (" in text


def test_managed_label_and_source_path_annotation_agree_with_the_webhook() -> None:
    # Each component keeps its own default (neither imports the other); this test holds them
    # together so the webhook guards exactly what the reconciler stamps.
    admission = webhook_config.AdmissionConfig()
    apply = config.ApplyConfig()
    assert (apply.managed_label_key, apply.managed_label_value) == (
        admission.managed_label.key,
        admission.managed_label.value,
    )
    assert apply.source_path_annotation == admission.path_annotation
    assert config.IdentityConfig().namespace == admission.namespace


def test_the_readme_example_is_a_valid_configuration(tmp_path: pathlib.Path) -> None:
    text = README.read_text()
    section = text[text.index("## The reconciler") :]
    start = section.index("```yaml\n") + len("```yaml\n")
    example = section[start : section.index("```", start)]
    loaded = config.load(write(tmp_path, example))
    assert loaded.source.paths == ("clusters/prod",)
    assert loaded.apply.default_namespace == "apps"
