"""Storage fixtures: a local folder and a bucket on a local moto S3 server (one server per test module)."""

from __future__ import annotations

import uuid

import pytest

from amtprep.io.storage import open_storage
from tests.s3server import s3_server


@pytest.fixture(scope="module")
def s3_root():
    pytest.importorskip("s3fs")
    pytest.importorskip("moto")
    import fsspec

    with s3_server():
        bucket = f"amtprep-{uuid.uuid4().hex[:8]}"
        fs = fsspec.filesystem("s3", skip_instance_cache=True)
        fs.mkdir(bucket)
        yield f"s3://{bucket}"
        fsspec.filesystem("s3").clear_instance_cache()


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path):
    if request.param == "local":
        return open_storage(tmp_path / "out")
    root = request.getfixturevalue("s3_root")
    return open_storage(f"{root}/{uuid.uuid4().hex[:8]}")
