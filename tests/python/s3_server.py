"""A local S3 API for the object-storage tests: moto's server (PyPI `moto[server]`).

    python s3_server.py serve BUCKET... [--put BUCKET/KEY=FILE]...
        starts on 127.0.0.1 (a free port), creates the buckets, uploads the files, prints
        `READY <port>` and serves until its standard input closes (the test ends) or it is
        killed.
    python s3_server.py ls PORT BUCKET [PREFIX]
        prints `KEY SIZE` per object, sorted.
    python s3_server.py get PORT BUCKET KEY FILE
        downloads one object.

Moto accepts any credentials; the tests set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY to dummy
values and AWS_ENDPOINT_URL to this server, as a user would for MinIO or Ceph.
"""

import logging
import sys

import boto3
from moto.server import ThreadedMotoServer


def client(port):
    return boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )


def serve(args):
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    buckets, puts = [], []
    it = iter(args)
    for a in it:
        if a == "--put":
            puts.append(next(it))
        else:
            buckets.append(a)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    port = server.get_host_and_port()[1]
    s3 = client(port)
    for b in buckets:
        s3.create_bucket(Bucket=b)
    for p in puts:
        target, path = p.split("=", 1)
        bucket, key = target.split("/", 1)
        s3.upload_file(path, bucket, key)
    print(f"READY {port}", flush=True)
    sys.stdin.read()
    server.stop()


def ls(port, bucket, prefix=""):
    pages = client(port).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    for page in pages:
        for o in page.get("Contents", []):
            print(o["Key"], o["Size"])


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "serve":
        serve(args)
    elif cmd == "ls":
        ls(*args)
    elif cmd == "get":
        port, bucket, key, path = args
        client(port).download_file(bucket, key, path)
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
