"""pymongo against a running cairnd over MongoDB's wire protocol.

Usage: python3 pymongo_suite.py mongodb://127.0.0.1:PORT/

Run by server/tests/wire_clients.rs (which starts cairnd); exits 0 when every check passes and
prints one line per check, then a summary line "N passed, N failed".
"""

import sys
import traceback

import pymongo
from pymongo import DeleteOne, InsertOne, MongoClient, ReplaceOne, UpdateOne, WriteConcern
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure

URI = sys.argv[1]
client = MongoClient(URI, serverSelectionTimeoutMS=10000, appname="cairn-pymongo-suite")
db = client.pymongo_suite

CHECKS = []


def check(function):
    CHECKS.append(function)
    return function


@check
def handshake_and_server_info():
    assert client.admin.command("ping")["ok"] == 1.0
    info = client.server_info()
    assert info["version"] == "8.0.0", info
    assert info["versionArray"][:2] == [8, 0], info
    hello = client.admin.command("hello")
    assert hello["isWritablePrimary"] is True, hello
    assert hello["maxWireVersion"] >= 17, hello
    status = client.admin.command("serverStatus")
    assert status["connections"]["current"] >= 1, status["connections"]
    parameter = client.admin.command({"getParameter": 1, "featureCompatibilityVersion": 1})
    assert parameter["featureCompatibilityVersion"]["version"] == "8.0", parameter
    assert client.admin.command("connectionStatus")["ok"] == 1.0
    assert "you" in client.admin.command("whatsmyuri")
    assert client.admin.command({"getLog": "startupWarnings"})["ok"] == 1.0


@check
def client_metadata_shows_in_current_op():
    current = client.admin.command({"currentOp": 1, "$all": True})
    own = [op for op in current["inprog"] if "currentOp" in op.get("command", {})]
    assert own, current
    metadata = own[0]["clientMetadata"]
    assert metadata["driver"]["name"].startswith("PyMongo"), metadata
    assert metadata["application"]["name"] == "cairn-pymongo-suite", metadata


@check
def insert_find_update_delete():
    items = db.items
    items.drop()
    result = items.insert_many([{"_id": i, "group": i % 4, "name": "item-%d" % i} for i in range(300)])
    assert len(result.inserted_ids) == 300
    assert items.count_documents({}) == 300
    assert items.count_documents({"group": 1}) == 75
    assert items.estimated_document_count() == 300
    assert items.find_one({"_id": 7})["name"] == "item-7"
    top = list(items.find({"group": 2}, {"_id": 1}).sort("_id", pymongo.DESCENDING).limit(3))
    assert top == [{"_id": 298}, {"_id": 294}, {"_id": 290}], top
    skipped = [d["_id"] for d in items.find().sort("_id", 1).skip(295)]
    assert skipped == [295, 296, 297, 298, 299], skipped
    result = items.update_many({"group": 0}, {"$set": {"flag": True}, "$inc": {"hits": 1}})
    assert (result.matched_count, result.modified_count) == (75, 75)
    result = items.update_one({"_id": 1000}, {"$set": {"name": "new"}}, upsert=True)
    assert result.upserted_id == 1000
    result = items.replace_one({"_id": 1}, {"name": "replaced"})
    assert result.modified_count == 1
    assert items.find_one({"_id": 1}) == {"_id": 1, "name": "replaced"}
    before = items.find_one_and_update({"_id": 2}, {"$set": {"name": "two"}})
    assert before["name"] == "item-2"
    after = items.find_one_and_update(
        {"_id": 3}, {"$set": {"name": "three"}}, return_document=pymongo.ReturnDocument.AFTER
    )
    assert after["name"] == "three"
    assert items.find_one_and_delete({"_id": 4})["_id"] == 4
    result = items.delete_many({"group": 3})
    assert result.deleted_count == 75
    assert sorted(items.distinct("group")) == [0, 1, 2], items.distinct("group")


@check
def cursors_across_get_more():
    items = db.cursor_items
    items.drop()
    items.insert_many([{"_id": i} for i in range(1000)])
    cursor = items.find().sort("_id", 1).batch_size(64)
    ids = [d["_id"] for d in cursor]
    assert ids == list(range(1000)), len(ids)
    # An abandoned cursor is killed (killCursors) without disturbing the next query.
    cursor = items.find().batch_size(10)
    next(cursor)
    cursor.close()
    assert items.count_documents({}) == 1000


@check
def bulk_writes_ordered_and_unordered():
    bulk = db.bulk
    bulk.drop()
    result = bulk.bulk_write(
        [
            InsertOne({"_id": 1, "v": 1}),
            InsertOne({"_id": 2, "v": 2}),
            UpdateOne({"_id": 1}, {"$set": {"v": 10}}),
            ReplaceOne({"_id": 2}, {"v": 20}),
            DeleteOne({"_id": 2}),
            UpdateOne({"_id": 3}, {"$set": {"v": 3}}, upsert=True),
        ]
    )
    assert result.inserted_count == 2, result.bulk_api_result
    assert result.modified_count == 2, result.bulk_api_result
    assert result.deleted_count == 1, result.bulk_api_result
    assert result.upserted_count == 1, result.bulk_api_result
    try:
        bulk.bulk_write([InsertOne({"_id": 10}), InsertOne({"_id": 1}), InsertOne({"_id": 11})])
        raise AssertionError("an ordered bulk write with a duplicate fails")
    except BulkWriteError as error:
        details = error.details
        assert details["nInserted"] == 1, details
        assert details["writeErrors"][0]["code"] == 11000, details
        assert details["writeErrors"][0]["index"] == 1, details
    try:
        bulk.bulk_write([InsertOne({"_id": 20}), InsertOne({"_id": 1}), InsertOne({"_id": 21})], ordered=False)
        raise AssertionError("an unordered bulk write with a duplicate fails")
    except BulkWriteError as error:
        assert error.details["nInserted"] == 2, error.details
    assert sorted(d["_id"] for d in bulk.find()) == [1, 3, 10, 20, 21], list(bulk.find())


@check
def indexes_and_duplicate_key_error():
    users = db.users
    users.drop()
    users.insert_many([{"_id": 1, "email": "a@x"}, {"_id": 2, "email": "b@x"}])
    name = users.create_index([("email", pymongo.ASCENDING)], unique=True)
    assert name == "email_1"
    indexes = users.index_information()
    assert indexes["email_1"]["unique"] is True, indexes
    try:
        users.insert_one({"_id": 3, "email": "a@x"})
        raise AssertionError("a duplicate email fails")
    except DuplicateKeyError as error:
        assert error.code == 11000, error.details
        assert "E11000" in str(error), str(error)
    try:
        users.insert_one({"_id": 1})
        raise AssertionError("a duplicate _id fails")
    except DuplicateKeyError as error:
        assert error.code == 11000
    plan = users.find({"email": "b@x"}).explain()
    winning = plan["queryPlanner"]["winningPlan"]
    assert "IXSCAN" in str(winning), winning
    users.drop_index("email_1")
    assert "email_1" not in users.index_information()


@check
def aggregation():
    sales = db.sales
    sales.drop()
    sales.insert_many([{"item": "a", "qty": q} for q in (1, 2, 3)] + [{"item": "b", "qty": 10}])
    groups = list(
        sales.aggregate(
            [
                {"$match": {"qty": {"$gt": 1}}},
                {"$group": {"_id": "$item", "total": {"$sum": "$qty"}, "n": {"$sum": 1}}},
                {"$sort": {"_id": 1}},
            ]
        )
    )
    assert groups == [{"_id": "a", "total": 5, "n": 2}, {"_id": "b", "total": 10, "n": 1}], groups
    many = list(sales.aggregate([{"$project": {"_id": 0, "item": 1}}], batchSize=1))
    assert len(many) == 4


@check
def unacknowledged_writes_then_a_read_sees_them():
    events = db.events
    events.drop()
    fire_and_forget = events.with_options(write_concern=WriteConcern(w=0))
    for i in range(50):
        result = fire_and_forget.insert_one({"_id": i})
        assert result.acknowledged is False
    fire_and_forget.insert_many([{"_id": i} for i in range(50, 200)])
    fire_and_forget.update_many({}, {"$set": {"seen": True}})
    fire_and_forget.insert_one({"_id": 0})  # a duplicate: dropped silently
    assert events.count_documents({"seen": True}) == 200


@check
def documents_near_16_mib():
    large = db.large
    large.drop()
    text = "x" * (16 * 1024 * 1024 - 1024)
    large.insert_one({"_id": 1, "text": text})
    assert len(large.find_one({"_id": 1})["text"]) == len(text)
    try:
        large.insert_one({"_id": 2, "text": "x" * (16 * 1024 * 1024 + 1)})
        raise AssertionError("a document over 16 MiB is refused")
    except (pymongo.errors.DocumentTooLarge, OperationFailure):
        pass
    assert large.count_documents({}) == 1


@check
def databases_and_collections():
    db.listing_a.insert_one({})
    db.listing_b.insert_one({})
    names = client.list_database_names()
    assert "pymongo_suite" in names, names
    filtered = list(client.list_databases(filter={"name": "pymongo_suite"}, nameOnly=True))
    assert filtered == [{"name": "pymongo_suite"}], filtered
    collections = db.list_collection_names(filter={"name": {"$regex": "^listing_"}})
    assert sorted(collections) == ["listing_a", "listing_b"], collections
    full = list(db.list_collections(filter={"name": "listing_a"}))
    assert full[0]["name"] == "listing_a" and full[0]["type"] == "collection", full
    db.listing_b.drop()
    assert "listing_b" not in db.list_collection_names()


@check
def sessions_and_errors():
    with client.start_session() as session:
        db.session_items.insert_one({"_id": 1}, session=session)
        assert db.session_items.find_one({"_id": 1}, session=session) == {"_id": 1}
    try:
        db.command("noSuchCommand")
        raise AssertionError("an unknown command fails")
    except OperationFailure as error:
        assert error.code == 59, error.details
    try:
        list(db.items.aggregate([{"$noSuchStage": {}}]))
        raise AssertionError("an unknown stage fails")
    except OperationFailure as error:
        assert error.code != 0, error.details


def main():
    client.drop_database("pymongo_suite")
    failed = 0
    for function in CHECKS:
        try:
            function()
            print("ok     %s" % function.__name__)
        except Exception:  # noqa: BLE001 - every failure is reported, then counted
            failed += 1
            print("FAILED %s" % function.__name__)
            traceback.print_exc()
    client.close()
    print("pymongo %s: %d passed, %d failed" % (pymongo.version, len(CHECKS) - failed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
