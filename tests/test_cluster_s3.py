"""A live tenant move between node processes through object storage: the nodes run with
`--bundle-s3` against an S3 endpoint in another process (moto's S3 server, standing in for
SeaweedFS / MinIO / S3, which cannot be installed from the package registries here), found by
boto3 through `AWS_ENDPOINT_URL` as a deployment would. Skips without moto's server extra
(kept out of the `test` extra for its size, like the S3 store's unit tests)."""

from __future__ import annotations

import numpy as np
import pytest

from client import Client, calls
from client.cluster import ClusterClient
from tests.test_cluster import Cluster, _free_port  # skips the module without etcd / aetcd
from tests.test_server_process import ADMIN_KEY

moto_server = pytest.importorskip(
    "moto.server", reason="moto[server] (an S3 endpoint) is not in the test extra"
)
boto3 = pytest.importorskip("boto3", reason="boto3 (the cluster extra) is not installed")

pytestmark = pytest.mark.timeout(300)

DIM = 16
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def test_a_move_between_node_processes_through_an_s3_endpoint(tmp_path) -> None:
    port = _free_port()
    s3 = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    s3.start()
    endpoint = f"http://127.0.0.1:{port}"
    bucket = boto3.client("s3", endpoint_url=endpoint, **_creds())
    bucket.create_bucket(Bucket="bundles")
    c = Cluster(
        tmp_path,
        node_args=["--bundle-s3", "s3://bundles/moves", "--lease-ttl", "60"],
        node_env={**S3_ENV, "AWS_ENDPOINT_URL": endpoint},
    )
    try:
        c.start_all(["n1", "n2"])
        rng = np.random.default_rng(3)
        x = rng.standard_normal((600, DIM)).astype(np.float32)
        docs = [{"n": i, "text": "é" * (i % 5)} for i in range(600)]
        with ClusterClient([c.address("n1")], ADMIN_KEY, timeout=30) as cc:
            cc.create_collection("mv", DIM)
            cc.create_tenant("t")  # least-loaded first: n1
            cc.create_tenant("u")  # n2
            assert cc.placements["t"].node == "n1"
            cc.upsert("mv", np.arange(600), x, tenant="t", documents=docs)
            cc.allow_sharing("t", "u")
            cc.grant("mv", np.arange(0, 600, 7), "u", tenant="t")
        with Client(c.address("n2"), ADMIN_KEY, timeout=120) as admin:
            report = admin._run(calls.move_tenant("t", "n2"))
        assert report["phase"] == "done" and report["target"] == "n2"
        # The bundle went through the bucket and was deleted at cleanup.
        assert bucket.list_objects_v2(Bucket="bundles").get("KeyCount", 0) == 0
        with ClusterClient([c.address("n1")], ADMIN_KEY, timeout=30) as cc:
            cc.refresh()
            assert cc.placements["t"].node == "n2"
            got = cc.get("mv", np.arange(600), tenant="t")
            np.testing.assert_array_equal(got.vectors, x)
            assert [d for d in got.documents] == docs
            hits = cc.search("mv", x[:5], 1, tenant="t")
            assert hits.ids[:, 0].tolist() == [0, 1, 2, 3, 4]
            shared = cc.search("mv", x[7:8], 1, tenant="u")
            assert shared.ids[0, 0] == 7  # the grant moved with its owner
    finally:
        c.stop()
        s3.stop()


def _creds() -> dict[str, str]:
    return {
        "region_name": S3_ENV["AWS_DEFAULT_REGION"],
        "aws_access_key_id": S3_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_ENV["AWS_SECRET_ACCESS_KEY"],
    }
