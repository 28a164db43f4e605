"""A keel pull worker in Python with only the standard library (Python 3.8+).

    KEEL_URL=http://127.0.0.1:7070 KEEL_TOKEN=… python3 examples/workers/worker.py mail

It long-polls for up to 10 jobs, runs each, and reports the finished ones in the call that
takes the next batch; a failed job is reported on its own so keel retries it.
"""
import json
import os
import sys
import urllib.request

BASE = os.environ.get("KEEL_URL", "http://127.0.0.1:7070") + "/api/v1"
TOKEN = os.environ["KEEL_TOKEN"]
QUEUE = sys.argv[1] if len(sys.argv) > 1 else "default"


def post(path, body):
    request = urllib.request.Request(
        BASE + path,
        data=json.dumps(body).encode(),
        headers={"Authorization": "Bearer " + TOKEN, "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        text = response.read()
        return json.loads(text) if text else None


def handle(job):
    """The work itself: return a result, or raise to fail the attempt."""
    print(f"{job['name']} (attempt {job['attempt']}/{job['max_attempts']})", job["payload"])
    return {"handled": True}


finished = []
while True:
    reply = post(f"/queues/{QUEUE}/fetch", {
        "max": 10, "wait": "20s", "lease": "60s", "worker": f"python-{os.getpid()}",
        "complete": finished,
    })
    finished = []
    for job in reply["jobs"]:
        try:
            finished.append({"id": job["id"], "token": job["token"], "result": handle(job)})
        except Exception as error:  # the attempt failed: keel retries after the backoff
            post(f"/jobs/{job['id']}/fail", {"token": job["token"], "error": str(error)})
