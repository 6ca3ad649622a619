"""What a stopped `wrangler dev` state directory still holds: R2 objects, job objects with tables,
and the tenant objects' rows (projection rows, idempotency keys, places in line). For
`npm run bench:soak` and `npm run bench:chaos`, which expect all of them to be 0 after every job
was deleted. R2 objects under a prefix a job's object still holds (`src/run/hold.ts`: a retry cut
short after copying the old job's outputs, purged when the hold lapses, an hour on) are counted
apart, as `r2_objects_held`."""
import json, os, re, sqlite3, sys

state = sys.argv[1]
counts = {"r2_objects": 0, "r2_objects_held": 0, "prefix_holds": 0, "job_objects_with_tables": 0, "job_objects_seen": 0, "projection_rows": 0, "idempotency_keys": 0, "tombstones": 0, "line_places": 0}


def user_tables(db):
    return [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_cf\\_%' ESCAPE '\\' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name != '__miniflare_do_name'")]


def count(db, table):
    return db.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0] if table in user_tables(db) else 0


def held_prefix(db):
    """The job id whose output prefix this job object holds, if it holds one that has not lapsed."""
    try:
        row = db.execute("SELECT value FROM _cf_KV WHERE key = 'prefix_hold'").fetchone()
    except sqlite3.OperationalError:
        return None
    if row is None or b"lapsedT" in row[0]:
        return None
    match = re.search(rb'job_id"[\x00-\x7f](run_[A-Za-z0-9_-]+)', row[0])
    return match.group(1).decode() if match else None


held = set()
do_root = os.path.join(state, "v3", "do")
for namespace in os.listdir(do_root) if os.path.isdir(do_root) else []:
    for f in os.listdir(os.path.join(do_root, namespace)):
        if not f.endswith(".sqlite") or f == "metadata.sqlite":
            continue
        db = sqlite3.connect(os.path.join(do_root, namespace, f))
        if namespace.endswith("-RunObject"):
            counts["job_objects_seen"] += 1
            counts["job_objects_with_tables"] += 1 if user_tables(db) else 0
            job_id = held_prefix(db)
            if job_id:
                held.add(job_id)
        elif namespace.endswith("-TenantProjection"):
            counts["projection_rows"] += count(db, "jobs")
            counts["idempotency_keys"] += count(db, "idempotency")
            counts["tombstones"] += count(db, "tombstones")
        elif namespace.endswith("-TenantLine"):
            counts["line_places"] += count(db, "places")
counts["prefix_holds"] = len(held)

r2_meta = os.path.join(state, "v3", "r2", "miniflare-R2BucketObject")
if os.path.isdir(r2_meta):
    for f in os.listdir(r2_meta):
        if f.endswith(".sqlite") and f != "metadata.sqlite":
            db = sqlite3.connect(os.path.join(r2_meta, f))
            if "_mf_objects" not in user_tables(db):
                continue
            for (key,) in db.execute("SELECT key FROM _mf_objects"):
                parts = key.split("/")
                counts["r2_objects_held" if len(parts) > 2 and parts[2] in held else "r2_objects"] += 1

json.dump(counts, sys.stdout)
