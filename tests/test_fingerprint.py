"""The code fingerprint follows the source of every module that decides a run's numbers."""
import shutil

import pytest

from vqpaper import fingerprint


@pytest.mark.parametrize("module", fingerprint.CODE_MODULES)
def test_code_fingerprint_follows_the_source(module, tmp_path):
    """Editing any module that decides a run's numbers changes the fingerprint (so every key)."""
    for name in fingerprint.CODE_MODULES:
        shutil.copyfile(fingerprint.PACKAGE / name, tmp_path / name)
    before = fingerprint.code_fingerprint(tmp_path)
    assert before == fingerprint.code_fingerprint(tmp_path)
    with open(tmp_path / module, "a") as fh:
        fh.write("\n# an edit\n")
    assert fingerprint.code_fingerprint(tmp_path) != before


def test_the_loaded_fingerprint_is_the_code_on_disk():
    assert fingerprint.LOADED == fingerprint.code_fingerprint()
