"""mars_dist.data.fs against a real S3 API server (moto) and a local folder, through the same calls."""
from __future__ import annotations

import hashlib
import os

import pytest

from mars_dist.data import fs


@pytest.fixture(params=["local", "s3"])
def storage_root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path)
    return request.getfixturevalue("s3_url")


def test_write_read_list_remove_round_trip(storage_root):
    url = fs.join(storage_root, "a.bin")
    assert not fs.exists(url)
    fs.makedirs(storage_root)
    fs.write_bytes_atomic(url, b"hello")
    fs.write_bytes_atomic(fs.join(storage_root, "b.bin"), b"x" * 10)
    assert fs.exists(url)
    assert fs.read_bytes(url) == b"hello"
    assert fs.size(url) == 5
    assert fs.sha256_of(url) == hashlib.sha256(b"hello").hexdigest()
    assert fs.list_names(storage_root) == ["a.bin", "b.bin"]
    fs.remove(url)
    assert not fs.exists(url)
    assert fs.list_names(storage_root) == ["b.bin"]


def test_local_atomic_write_leaves_no_temporary(tmp_path):
    url = str(tmp_path / "m.json")
    fs.write_bytes_atomic(url, b"{}")
    fs.write_bytes_atomic(url, b"{\"a\": 1}")
    assert os.listdir(tmp_path) == ["m.json"]
    assert fs.read_bytes(url) == b"{\"a\": 1}"


def test_commit_file_moves_and_verifies(storage_root, tmp_path):
    fs.makedirs(storage_root)
    tmp = tmp_path / ".staged.tmp"
    tmp.write_bytes(b"0123456789")
    url = fs.join(storage_root, "staged.bin")
    fs.commit_file(str(tmp), url)
    assert not tmp.exists(), "the temporary file must be consumed"
    assert fs.read_bytes(url) == b"0123456789"


def test_missing_s3_listing_is_empty(s3_url):
    assert fs.list_names(s3_url) == []


def test_endpoint_falls_back_to_aws_endpoint_url(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    assert fs.resolve_storage_options("s3://b/p")["endpoint_url"] == "http://127.0.0.1:9"
    explicit = fs.resolve_storage_options("s3://b/p", {"endpoint_url": "http://other:1"})
    assert explicit["endpoint_url"] == "http://other:1"
    assert fs.resolve_storage_options("/local/dir", {}) == {}
