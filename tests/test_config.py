import pytest
import yaml

from eve_fdd.config import Config, ConfigError, load_config, parse_config


def test_project_params_load_and_match_defaults(root):
    cfg = load_config(root / "params.yaml")
    assert cfg.profile == "shapes"
    assert cfg.world.size == 32 and cfg.world.frames == 8
    assert cfg.videos.count == 256
    # params.yaml spells out every default, so the file is the one place to read them
    assert cfg == Config()


def _write(tmp_path, data):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _params(root):
    return yaml.safe_load((root / "params.yaml").read_text())


def test_unknown_key_names_its_path(tmp_path, root):
    data = _params(root)
    data["videos"]["ingest"]["strde"] = 2
    with pytest.raises(ConfigError, match=r"unknown key 'videos\.ingest\.strde'"):
        load_config(_write(tmp_path, data))


def test_wrong_type_names_path_and_expectation(tmp_path, root):
    data = _params(root)
    data["world"]["size"] = "big"
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, data))
    msg = str(err.value)
    assert "world.size" in msg and "integer" in msg and "'big'" in msg and "params.yaml" in msg


def test_every_error_is_reported_at_once(tmp_path, root):
    data = _params(root)
    data["profile"] = "huge"
    data["videos"]["fps"] = -1
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, data))
    assert "'profile'" in str(err.value) and "'videos.fps'" in str(err.value)


def test_cross_field_check():
    with pytest.raises(ConfigError, match="min_shapes"):
        parse_config({"world": {"min_shapes": 5, "max_shapes": 3}})


def test_overrides_use_dotted_keys(root):
    cfg = load_config(root / "params.yaml", overrides={"world.size": 16, "seed": 7})
    assert cfg.world.size == 16 and cfg.seed == 7


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("world: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    top = tmp_path / "top.yaml"
    top.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(top)


def test_config_is_immutable(root):
    cfg = load_config(root / "params.yaml")
    with pytest.raises(Exception):
        cfg.world.size = 64


def test_config_hashes_by_value_even_with_mapping_sections(root):
    """Prefect hashes task inputs (the config among them); `loras.pretrained` is a mapping."""
    a, b = load_config(root / "params.yaml"), load_config(root / "params.yaml")
    assert hash(a) == hash(b)
    c = load_config(root / "params.yaml", overrides={"loras.pretrained": {"star": "/somewhere"}})
    assert hash(c) != hash(a) and {a: 1}[b] == 1


def test_fingerprint_changes_with_the_package_source(tmp_path, monkeypatch):
    """A checkpoint is resumed only by the same code: the fingerprint hashes the package's
    source, so editing any module (e.g. the renderer a LoRA's data comes from) starts over."""
    from eve_fdd import config as config_module

    cfg = Config()
    before = cfg.fingerprint(("loras",))
    assert cfg.fingerprint(("loras",)) == before  # stable for the same code
    for name in ("a.py", "sub/b.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x = 1\n")
    monkeypatch.setattr(config_module, "PACKAGE_DIR", tmp_path)
    copied = cfg.fingerprint(("loras",))
    assert copied != before
    (tmp_path / "sub/b.py").write_text("x = 2\n")
    edited = cfg.fingerprint(("loras",))
    assert edited != copied
    (tmp_path / "notes.txt").write_text("not code")
    assert cfg.fingerprint(("loras",)) == edited  # only Python source counts


def test_a_module_fingerprint_hashes_only_the_files_the_module_runs(tmp_path):
    """FDD's seed runs keep their setup when the report or another stage changes: the code
    hashed is what importing the stage module runs (absolute, relative and in-function
    imports, packages' __init__), and an edit outside it changes nothing."""
    from eve_fdd.config import module_sources, source_digest

    pkg = tmp_path / "pkg"
    files = {"__init__.py": "", "a.py": "from .b import x\nfrom . import sub\n\ndef f():\n    from pkg.sub.c import y\n",
             "b.py": "import os\nx = 1\n", "sub/__init__.py": "", "sub/c.py": "from ..b import x as y\n",
             "d.py": "from .a import f\n", "e/__init__.py": ""}
    for name, text in files.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(text)
    assert [p.relative_to(pkg).as_posix() for p in module_sources("pkg.a", pkg)] == ["__init__.py", "a.py", "b.py", "sub/__init__.py", "sub/c.py"]
    before, whole = source_digest(pkg, "pkg.a"), source_digest(pkg)
    (pkg / "d.py").write_text("from .a import f\nz = 2\n")  # imports a, but a does not import it
    assert source_digest(pkg, "pkg.a") == before and source_digest(pkg) != whole
    (pkg / "sub/c.py").write_text("from ..b import x as y\ny = 3\n")  # reached only through the import inside f
    assert source_digest(pkg, "pkg.a") != before
    with pytest.raises(ValueError, match="no module 'pkg.nope'"):
        module_sources("pkg.nope", pkg)


def test_fingerprint_hashes_every_file_of_a_directory_input(tmp_path):
    """A stage's inputs may be model directories (FDD's teachers): a change to any file
    under one, or a renamed file, is another run."""
    cfg = Config()
    teacher = tmp_path / "edit_adapter"
    (teacher / "model").mkdir(parents=True)
    (teacher / "model.json").write_text('{"path": "model"}')
    (teacher / "model" / "weights.safetensors").write_bytes(b"\x00" * 8)
    before = cfg.fingerprint(("fdd",), (teacher,))
    assert cfg.fingerprint(("fdd",), (teacher,)) == before
    (teacher / "model" / "weights.safetensors").write_bytes(b"\x01" + b"\x00" * 7)
    changed = cfg.fingerprint(("fdd",), (teacher,))
    assert changed != before
    (teacher / "model" / "weights.safetensors").rename(teacher / "model" / "other.safetensors")
    assert cfg.fingerprint(("fdd",), (teacher,)) not in (before, changed)
    assert cfg.fingerprint(("fdd",)) != cfg.fingerprint(("fdd",), (teacher,))


def test_an_unquoted_no_precision_is_float32_not_an_error():
    # YAML 1.1 reads `mixed_precision: no` as false; DVC's `-S fdd.mixed_precision=no` writes it so
    cfg = parse_config(yaml.safe_load("fdd:\n  mixed_precision: no\nbackbone:\n  train:\n    mixed_precision: no\n"))
    assert cfg.fdd.mixed_precision == "no" and cfg.backbone.train.mixed_precision == "no"
    with pytest.raises(ConfigError, match="fdd.mixed_precision"):
        parse_config({"fdd": {"mixed_precision": True}})
