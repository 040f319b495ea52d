# The tiny Actor of the last-run compat tests (Python and JS): reads its INPUT (`mode`), writes
# items, an OUTPUT record and a request into its default storages, then succeeds or fails as told.
python3 - <<'EOF'
import json, os, sys, urllib.request, urllib.error
base = os.environ["APIFY_API_BASE_URL"] + "/v2"
auth = {"authorization": "Bearer " + os.environ["APIFY_TOKEN"], "content-type": "application/json"}
def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method, headers=auth)
    return urllib.request.urlopen(req).read()
kv = os.environ["ACTOR_DEFAULT_KEY_VALUE_STORE_ID"]
try:
    inp = json.loads(call("GET", "/key-value-stores/%s/records/INPUT" % kv))
except urllib.error.HTTPError:
    inp = {}
task = os.environ.get("ACTOR_TASK_ID")
mode = inp.get("mode", "ok")
call("POST", "/datasets/%s/items" % os.environ["ACTOR_DEFAULT_DATASET_ID"],
     [{"n": i, "mode": mode, "task": task} for i in range(3)])
call("PUT", "/key-value-stores/%s/records/OUTPUT" % kv, {"input": inp, "task": task})
call("POST", "/request-queues/%s/requests" % os.environ["ACTOR_DEFAULT_REQUEST_QUEUE_ID"],
     {"url": "https://example.com/" + mode, "uniqueKey": mode})
print("mode", mode, "task", task, flush=True)
sys.exit(2 if mode == "fail" else 0)
EOF
