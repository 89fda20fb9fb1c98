//! The shell's API against the command-recording test double: the exact command documents each
//! helper sends, cursor batches and `it`, BSON types across round trips, printing and errors.

mod support;

use bson::{Bson, doc};
use cairn_shell::EvalError;
use support::Harness;

#[test]
fn find_with_cursor_methods_sends_one_find() {
    let h = Harness::start();
    h.ok("db.c.find({a:1}).sort({b:-1}).limit(5)");
    assert_eq!(
        h.last("find"),
        doc! {"find": "c", "filter": {"a": 1}, "sort": {"b": -1}, "limit": 5, "$db": "test"}
    );
    // The order of the calls does not change the document.
    h.ok("db.c.find({}, {x: 1}).limit(2).skip(3).sort({y: 1}).batchSize(7).toArray()");
    assert_eq!(
        h.last("find"),
        doc! {"find": "c", "filter": {}, "sort": {"y": 1}, "projection": {"x": 1}, "skip": 3, "limit": 2, "batchSize": 7, "$db": "test"}
    );
    h.ok("db.c.find().project({_id: 0}).hint({a: 1}).maxTimeMS(100).toArray()");
    assert_eq!(
        h.last("find"),
        doc! {"find": "c", "filter": {}, "projection": {"_id": 0}, "hint": {"a": 1}, "maxTimeMS": 100, "$db": "test"}
    );
    h.ok("db.c.findOne({_id: 3}, {a: 1})");
    assert_eq!(
        h.last("find"),
        doc! {"find": "c", "filter": {"_id": 3}, "projection": {"a": 1}, "limit": 1, "singleBatch": true, "$db": "test"}
    );
    assert!(
        h.run("db.c.find().limit(1).next(); 1")
            .contains("MongoCursorExhaustedError"),
        "nothing to return"
    );
    let started = h.run("c = db.c.find(); c.hasNext(); c.sort({a: 1})");
    assert!(started.contains("MongoCursorInUseError"), "{started}");
}

#[test]
fn write_helpers_send_mongodb_commands_and_return_mongosh_results() {
    let h = Harness::start();
    assert_eq!(
        h.ok("db.people.insertOne({_id: 1, name: 'Ada'})"),
        "{ acknowledged: true, insertedId: 1 }"
    );
    assert_eq!(
        h.last("insert"),
        doc! {"insert": "people", "documents": [{"_id": 1, "name": "Ada"}], "$db": "test"}
    );
    let generated = h.ok("db.people.insertOne({name: 'Bob'}, {writeConcern: {w: 'majority'}})");
    assert!(generated.contains("insertedId: ObjectId('"), "{generated}");
    let insert = h.last("insert");
    let document = insert.get_array("documents").unwrap()[0]
        .as_document()
        .unwrap()
        .clone();
    assert_eq!(
        document.keys().collect::<Vec<_>>(),
        ["_id", "name"],
        "the generated _id comes first"
    );
    assert_eq!(
        insert.get_document("writeConcern").unwrap(),
        &doc! {"w": "majority"}
    );

    assert_eq!(
        h.ok("db.people.insertMany([{_id: 2}, {_id: 3}])"),
        "{ acknowledged: true, insertedIds: { '0': 2, '1': 3 } }"
    );
    assert_eq!(
        h.last("insert"),
        doc! {"insert": "people", "documents": [{"_id": 2}, {"_id": 3}], "ordered": true, "$db": "test"}
    );

    h.ok("db.people.updateOne({_id: 1}, {$set: {age: 36}}, {upsert: true})");
    assert_eq!(
        h.last("update"),
        doc! {"update": "people", "updates": [{"q": {"_id": 1}, "u": {"$set": {"age": 36}}, "upsert": true}], "ordered": true, "$db": "test"}
    );
    assert_eq!(
        h.ok("db.people.updateMany({}, {$set: {x: 1}})"),
        "{\n  acknowledged: true,\n  insertedId: null,\n  matchedCount: 4,\n  modifiedCount: 4,\n  upsertedCount: 0\n}"
    );
    assert!(
        h.last("update").get_array("updates").unwrap()[0]
            .as_document()
            .unwrap()
            .get_bool("multi")
            .unwrap()
    );
    h.ok("db.people.replaceOne({_id: 2}, {name: 'Cy'})");
    assert_eq!(
        h.last("update"),
        doc! {"update": "people", "updates": [{"q": {"_id": 2}, "u": {"name": "Cy"}}], "ordered": true, "$db": "test"}
    );
    assert!(
        h.run("db.people.updateOne({}, {a: 1})")
            .contains("MongoInvalidArgumentError: Update document requires atomic operators")
    );
    assert!(
        h.run("db.people.replaceOne({}, {$set: {a: 1}})")
            .contains("must not contain atomic operators")
    );

    assert_eq!(
        h.ok("db.people.findOneAndUpdate({_id: 1}, {$inc: {age: 1}}, {returnDocument: 'after', sort: {age: 1}})"),
        "{ _id: 1, name: 'Ada', age: 36, x: 1 }"
    );
    assert_eq!(
        h.last("findAndModify"),
        doc! {"findAndModify": "people", "query": {"_id": 1}, "sort": {"age": 1}, "update": {"$inc": {"age": 1}}, "new": true, "$db": "test"}
    );
    h.ok("db.people.findOneAndReplace({_id: 3}, {name: 'Di'}, {projection: {name: 1}})");
    assert_eq!(
        h.last("findAndModify"),
        doc! {"findAndModify": "people", "query": {"_id": 3}, "fields": {"name": 1}, "update": {"name": "Di"}, "new": false, "$db": "test"}
    );
    h.ok("db.people.findOneAndDelete({_id: 3})");
    assert_eq!(
        h.last("findAndModify"),
        doc! {"findAndModify": "people", "query": {"_id": 3}, "remove": true, "$db": "test"}
    );

    assert_eq!(
        h.ok("db.people.deleteOne({_id: 2})"),
        "{ acknowledged: true, deletedCount: 1 }"
    );
    assert_eq!(
        h.last("delete"),
        doc! {"delete": "people", "deletes": [{"q": {"_id": 2}, "limit": 1}], "ordered": true, "$db": "test"}
    );
    h.ok("db.people.deleteMany({})");
    assert_eq!(
        h.last("delete"),
        doc! {"delete": "people", "deletes": [{"q": {}, "limit": 0}], "ordered": true, "$db": "test"}
    );
}

#[test]
fn read_helpers_send_mongodb_commands() {
    let h = Harness::start();
    h.server.double.seed(
        "test.c",
        (0..3).map(|i| doc! {"_id": i, "k": i % 2}).collect(),
    );
    assert_eq!(h.ok("db.c.countDocuments({k: 1})"), "1");
    assert_eq!(
        h.last("aggregate"),
        doc! {"aggregate": "c", "pipeline": [{"$match": {"k": 1}}, {"$group": {"_id": 1, "n": {"$sum": 1}}}], "cursor": {}, "$db": "test"}
    );
    assert_eq!(h.ok("db.c.estimatedDocumentCount()"), "3");
    assert_eq!(h.last("count"), doc! {"count": "c", "$db": "test"});
    assert_eq!(h.ok("db.c.distinct('k')"), "[ 0, 1 ]");
    assert_eq!(
        h.last("distinct"),
        doc! {"distinct": "c", "key": "k", "$db": "test"}
    );
    h.ok("db.c.distinct('k', {k: 0})");
    assert_eq!(
        h.last("distinct"),
        doc! {"distinct": "c", "key": "k", "query": {"k": 0}, "$db": "test"}
    );
    h.ok("db.c.aggregate([{$match: {k: 0}}])");
    assert_eq!(
        h.last("aggregate"),
        doc! {"aggregate": "c", "pipeline": [{"$match": {"k": 0}}], "cursor": {}, "$db": "test"}
    );
    h.ok("db.c.aggregate([{$match: {}}], {batchSize: 2})");
    assert_eq!(
        h.last("aggregate"),
        doc! {"aggregate": "c", "pipeline": [{"$match": {}}], "cursor": {"batchSize": 2}, "$db": "test"}
    );
    h.ok("db.c.find({k: 1}).explain()");
    assert_eq!(
        h.last("explain"),
        doc! {"explain": {"find": "c", "filter": {"k": 1}}, "verbosity": "queryPlanner", "$db": "test"}
    );
    h.ok("db.c.find({k: 1}).limit(1).explain('executionStats')");
    assert_eq!(
        h.last("explain"),
        doc! {"explain": {"find": "c", "filter": {"k": 1}, "limit": 1}, "verbosity": "executionStats", "$db": "test"}
    );
    assert_eq!(
        h.ok("db.c.find({k: 0}).count()"),
        "3",
        "the double's count ignores the query"
    );
    assert_eq!(
        h.last("count"),
        doc! {"count": "c", "query": {"k": 0}, "$db": "test"}
    );
}

#[test]
fn index_collection_database_and_admin_helpers() {
    let h = Harness::start();
    assert_eq!(h.ok("db.c.createIndex({a: 1, b: -1})"), "a_1_b_-1");
    assert_eq!(
        h.last("createIndexes"),
        doc! {"createIndexes": "c", "indexes": [{"key": {"a": 1, "b": -1}, "name": "a_1_b_-1"}], "$db": "test"}
    );
    assert_eq!(
        h.ok("db.c.createIndexes([{x: 1}, {y: 1}], {unique: true})"),
        "[ 'x_1', 'y_1' ]"
    );
    assert_eq!(
        h.last("createIndexes"),
        doc! {"createIndexes": "c", "indexes": [{"key": {"x": 1}, "name": "x_1", "unique": true}, {"key": {"y": 1}, "name": "y_1", "unique": true}], "$db": "test"}
    );
    let indexes = h.ok("db.c.getIndexes()");
    assert!(
        indexes.starts_with("[\n  { v: 2, key: { _id: 1 }, name: '_id_' },"),
        "{indexes}"
    );
    assert_eq!(
        h.last("listIndexes"),
        doc! {"listIndexes": "c", "$db": "test"}
    );
    h.ok("db.c.dropIndex('a_1_b_-1')");
    assert_eq!(
        h.last("dropIndexes"),
        doc! {"dropIndexes": "c", "index": "a_1_b_-1", "$db": "test"}
    );
    h.ok("db.c.dropIndexes()");
    assert_eq!(
        h.last("dropIndexes"),
        doc! {"dropIndexes": "c", "index": "*", "$db": "test"}
    );
    assert_eq!(h.ok("db.c.drop()"), "true");
    assert_eq!(h.last("drop"), doc! {"drop": "c", "$db": "test"});
    assert_eq!(h.ok("db.c.drop()"), "false", "a missing collection");

    assert_eq!(
        h.ok("db.createCollection('made', {capped: true, size: 4096})"),
        "{ ok: 1 }"
    );
    assert_eq!(
        h.last("create"),
        doc! {"create": "made", "capped": true, "size": 4096, "$db": "test"}
    );
    h.ok("db.getCollection('odd-name').find({}).toArray()");
    assert_eq!(
        h.last("find"),
        doc! {"find": "odd-name", "filter": {}, "$db": "test"}
    );
    h.ok("db.getSiblingDB('other').things.insertOne({_id: 1})");
    assert_eq!(h.last("insert").get_str("$db").unwrap(), "other");
    assert_eq!(h.ok("db.getSiblingDB('other').getName()"), "other");
    assert_eq!(h.ok("db.system.users.getFullName()"), "test.system.users");
    assert_eq!(h.ok("db.getCollectionNames()"), "[ 'made' ]");
    assert_eq!(
        h.last("listCollections"),
        doc! {"listCollections": 1, "filter": {}, "nameOnly": true, "$db": "test"}
    );
    assert_eq!(h.ok("db.dropDatabase()"), "{ dropped: 'test', ok: 1 }");
    assert_eq!(
        h.last("dropDatabase"),
        doc! {"dropDatabase": 1, "$db": "test"}
    );

    assert_eq!(h.ok("db.runCommand({ping: 1})"), "{ ok: 1 }");
    assert_eq!(h.last("ping"), doc! {"ping": 1, "$db": "test"});
    h.ok("db.runCommand('ping')");
    h.ok("db.adminCommand({ping: 1})");
    assert_eq!(h.last("ping"), doc! {"ping": 1, "$db": "admin"});
    assert_eq!(h.ok("db.currentOp()"), "{ inprog: [], ok: 1 }");
    assert_eq!(h.last("currentOp"), doc! {"currentOp": 1, "$db": "admin"});
    h.ok("db.currentOp(true)");
    assert_eq!(
        h.last("currentOp"),
        doc! {"currentOp": 1, "$all": true, "$db": "admin"}
    );
    h.ok("db.currentOp({waitingForLock: true})");
    assert_eq!(
        h.last("currentOp"),
        doc! {"currentOp": 1, "waitingForLock": true, "$db": "admin"}
    );
    h.ok("db.killOp(12)");
    assert_eq!(
        h.last("killOp"),
        doc! {"killOp": 1, "op": 12, "$db": "admin"}
    );
    h.ok("db.serverStatus()");
    assert_eq!(
        h.last("serverStatus"),
        doc! {"serverStatus": 1, "$db": "admin"}
    );
    h.ok("db.fsyncLock()");
    assert_eq!(
        h.last("fsync"),
        doc! {"fsync": 1, "lock": true, "$db": "admin"}
    );
    h.ok("db.fsyncUnlock()");
    assert_eq!(
        h.last("fsyncUnlock"),
        doc! {"fsyncUnlock": 1, "$db": "admin"}
    );
}

#[test]
fn shell_commands_and_it_batches() {
    let h = Harness::start();
    h.server
        .double
        .seed("app.c", (0..45).map(|i| doc! {"_id": i}).collect());
    assert_eq!(h.ok("use app"), "switched to db app");
    assert_eq!(h.ok("db"), "app");
    assert_eq!(h.ok("show collections"), "c");
    assert_eq!(h.ok("show dbs"), "app  8.00 KiB");
    let first = h.ok("db.c.find().batchSize(10)");
    assert!(first.starts_with("[\n  { _id: 0 },"), "{first}");
    assert!(
        first.contains("{ _id: 19 }\n]\nType \"it\" for more"),
        "{first}"
    );
    assert!(!first.contains("_id: 20 }"));
    let second = h.ok("it");
    assert!(
        second.starts_with("[\n  { _id: 20 },") && second.ends_with("Type \"it\" for more"),
        "{second}"
    );
    let third = h.ok("it");
    assert!(
        third.contains("{ _id: 44 }") && !third.contains("Type \"it\""),
        "{third}"
    );
    assert_eq!(h.ok("it"), "no cursor");
    let get_mores = h.server.double.commands_named("getMore");
    assert_eq!(get_mores.len(), 4, "45 documents in batches of 10");
    assert_eq!(get_mores[0].get_str("collection").unwrap(), "c");
    assert_eq!(h.shell.open_cursors(), 0);
    assert!(h.run("show users").contains("is not supported"));
    assert!(
        h.run("use a.b").contains("ERROR"),
        "not a valid name for use: left as JS, a syntax error"
    );
}

#[test]
fn cursor_iteration_methods() {
    let h = Harness::start();
    h.server
        .double
        .seed("test.c", (0..5).map(|i| doc! {"_id": i}).collect());
    assert_eq!(
        h.ok("db.c.find().map(d => d._id * 10).toArray()"),
        "[ 0, 10, 20, 30, 40 ]"
    );
    h.ok("let seen = []; db.c.find().forEach(d => seen.push(d._id))");
    assert_eq!(h.ok("seen"), "[ 0, 1, 2, 3, 4 ]");
    assert_eq!(h.ok("let k = db.c.find().batchSize(2); [k.hasNext(), k.next()._id, k.next()._id, k.itcount()]"), "[ true, 0, 1, 3 ]");
    assert_eq!(
        h.ok("let total = 0; for (const d of db.c.find()) total += d._id; total"),
        "10"
    );
    assert_eq!(h.ok("db.c.find({_id: 99}).tryNext()"), "null");
    // A cursor closed early kills its server cursor.
    h.ok("let early = db.c.find().batchSize(2); early.next(); early.close()");
    for _ in 0..100 {
        if !h.server.double.killed_cursors().is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(h.server.double.killed_cursors().len(), 1);
}

#[test]
fn bson_types_survive_round_trips() {
    let h = Harness::start();
    h.ok(r#"db.types.insertOne({
        _id: ObjectId('65a1b2c3d4e5f60718293a4b'), i: 1, neg: -7, d: 1.5, big: 2147483648, nz: -0,
        long: NumberLong('9007199254740993'), int: NumberInt(7), dbl: Double(2),
        dec: NumberDecimal('1.10'), s: 'text', t: true, n: null, u: undefined,
        date: ISODate('2024-01-02T03:04:05.678Z'), ts: Timestamp({t: 1700000000, i: 3}),
        bin: BinData(0, 'AQID'), uuid: UUID('0123456789abcdef0123456789abcdef'),
        re: /ab+c/i, bre: BSONRegExp('a(?x)b', 'x'), min: MinKey, max: MaxKey(),
        arr: [1, 'two', [3]], sub: {deep: {deeper: NumberLong(1)}}, code: Code('function() {}')
    })"#);
    let stored = h.server.double.documents("test.types").remove(0);
    let expected = doc! {
        "_id": bson::oid::ObjectId::parse_str("65a1b2c3d4e5f60718293a4b").unwrap(),
        "i": 1, "neg": -7, "d": 1.5, "big": 2147483648.0_f64, "nz": -0.0_f64,
        "long": 9007199254740993_i64, "int": 7, "dbl": 2.0_f64,
        "dec": "1.10".parse::<bson::Decimal128>().unwrap(), "s": "text", "t": true, "n": Bson::Null, "u": Bson::Null,
        "date": bson::DateTime::from_millis(1704164645678), "ts": bson::Timestamp { time: 1700000000, increment: 3 },
        "bin": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: vec![1, 2, 3] },
        "uuid": bson::Binary { subtype: bson::spec::BinarySubtype::Uuid, bytes: (0..16).map(|i| [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef][i % 8]).collect() },
        "re": bson::Regex { pattern: "ab+c".try_into().unwrap(), options: "i".try_into().unwrap() },
        "bre": bson::Regex { pattern: "a(?x)b".try_into().unwrap(), options: "x".try_into().unwrap() },
        "min": Bson::MinKey, "max": Bson::MaxKey,
        "arr": [1, "two", [3]], "sub": {"deep": {"deeper": 1_i64}}, "code": Bson::JavaScriptCode("function() {}".into()),
    };
    assert_eq!(stored, expected);
    let exact_types = |a: &bson::Document, b: &bson::Document| {
        for (key, value) in a {
            assert_eq!(
                value.element_type(),
                b.get(key).unwrap().element_type(),
                "{key}"
            );
        }
    };
    exact_types(&stored, &expected);
    // Read back and written again: every type is kept (int32 vs double vs long included).
    h.ok("db.copy.insertOne(db.types.findOne())");
    let copied = h.server.double.documents("test.copy").remove(0);
    exact_types(&copied, &stored);
    assert_eq!(
        copied.get_f64("nz").unwrap().to_bits(),
        (-0.0_f64).to_bits()
    );
    assert_eq!(copied, stored);
    // And shown as mongosh shows them.
    let shown = h.ok("db.types.findOne()");
    for expected in [
        "_id: ObjectId('65a1b2c3d4e5f60718293a4b')",
        "i: 1,",
        "d: 1.5,",
        "big: 2147483648,",
        "nz: -0,",
        "long: Long('9007199254740993')",
        "int: 7,",
        "dbl: 2,",
        "dec: Decimal128('1.10')",
        "s: 'text'",
        "n: null",
        "date: ISODate('2024-01-02T03:04:05.678Z')",
        "ts: Timestamp({ t: 1700000000, i: 3 })",
        "bin: Binary.createFromBase64('AQID', 0)",
        "uuid: UUID('01234567-89ab-cdef-0123-456789abcdef')",
        "re: /ab+c/i",
        "bre: BSONRegExp('a(?x)b', 'x')",
        "min: MinKey()",
        "max: MaxKey()",
        "arr: [ 1, 'two', [ 3 ] ]",
        "sub: { deep: { deeper: Long('1') } }",
        "code: Code('function() {}')",
    ] {
        assert!(shown.contains(expected), "{expected} not in {shown}");
    }
    // Arithmetic still works on the wrappers.
    assert_eq!(
        h.ok("const r = db.types.findOne(); [r.dbl + 1, r.long > 5, r.int + r.i]"),
        "[ 3, true, 8 ]"
    );
}

#[test]
fn printing_follows_mongosh() {
    let h = Harness::start();
    assert_eq!(
        h.ok("({ _id: ObjectId('65a1b2c3d4e5f60718293a4b'), n: 1, big: NumberLong(5) })"),
        "{ _id: ObjectId('65a1b2c3d4e5f60718293a4b'), n: 1, big: Long('5') }"
    );
    assert_eq!(h.ok("'plain string'"), "plain string");
    assert_eq!(h.ok("['it\\'s', \"q\"]"), "[ \"it's\", 'q' ]");
    assert_eq!(
        h.ok("({'b-c': 1, a_b: [], o: {}, u: undefined, f: function named() {}})"),
        "{ 'b-c': 1, a_b: [], o: {}, u: undefined, f: [Function: named] }"
    );
    assert_eq!(h.ok("1.5e300"), "1.5e+300");
    assert_eq!(h.ok("NumberInt(5)"), "Int32(5)");
    assert_eq!(
        h.ok("x = {a: {b: {c: {d: {e: {f: {g: {h: 1}}}}}}}}"),
        "{\n  a: {\n    b: {\n      c: {\n        d: { e: { f: { g: [Object] } } }\n      }\n    }\n  }\n}"
    );
    assert_eq!(
        h.ok("let cyc = {}; cyc.self = cyc; cyc"),
        "{ self: [Circular] }"
    );
    h.ok("printjson({a: 1}); print('x', 2, [3])");
    assert_eq!(h.take_output(), "{ a: 1 }\nx 2 [ 3 ]\n");
    assert_eq!(h.run("undefined"), "");
}

#[test]
fn errors_are_reported_like_mongosh() {
    let h = Harness::start();
    h.ok("db.c.insertOne({_id: 1})");
    assert_eq!(
        h.run("db.c.insertOne({_id: 1})"),
        "ERROR MongoServerError[DuplicateKey]: E11000 duplicate key error collection: test.c index: _id_ dup key: { _id: 1 }"
    );
    let bulk = h.run("db.c.insertMany([{_id: 2}, {_id: 1}, {_id: 3}])");
    assert!(
        bulk.starts_with("ERROR MongoBulkWriteError[DuplicateKey]: E11000"),
        "{bulk}"
    );
    assert_eq!(
        h.ok("try { db.c.insertMany([{_id: 4}, {_id: 1}]) } catch (e) { [e.code, e.insertedIds] }"),
        "[ 11000, { '0': 4 } ]"
    );
    assert_eq!(
        h.run("db.runCommand({frob: 1})"),
        "ERROR MongoServerError[CommandNotFound]: no such command: 'frob'"
    );
    assert_eq!(
        h.ok("try { db.runCommand({frob: 1}) } catch (e) { [e.name, e.code, e.codeName] }"),
        "[ 'MongoServerError', 59, 'CommandNotFound' ]"
    );
    h.server.double.script("find", doc! {"ok": 0.0, "errmsg": "operation exceeded time limit", "code": 50, "codeName": "MaxTimeMSExpired", "errorLabels": ["X"]});
    assert_eq!(
        h.ok("try { db.c.find().toArray() } catch (e) { [e.codeName, e.errorLabels] }"),
        "[ 'MaxTimeMSExpired', [ 'X' ] ]"
    );
    let syntax = h.run("db.c.find({)");
    assert!(syntax.starts_with("ERROR SyntaxError:"), "{syntax}");
    assert_eq!(h.run("throw 5"), "ERROR Uncaught 5");
    assert!(
        h.run("ObjectId('nope')")
            .starts_with("ERROR TypeError: ObjectId() takes 24 hexadecimal characters")
    );
    assert!(
        h.run("NumberDecimal('abc')")
            .contains("BSONError: 'abc' is not a valid Decimal128 string")
    );
    assert!(
        h.run("db.c.insertOne({f: Symbol('s')})")
            .contains("BSONError: a Symbol cannot be stored")
    );
    assert!(
        h.run("let loop = {}; loop.me = loop; db.c.insertOne(loop)")
            .contains("nested more than 100 levels")
    );
    // The shell keeps working after errors.
    assert_eq!(h.ok("1 + 1"), "2");
}

#[test]
fn quit_and_interrupt() {
    let h = Harness::start();
    assert_eq!(h.shell.run_input("quit(3)"), Err(EvalError::Exit(3)));
    assert_eq!(
        h.shell
            .run_input("try { quit(4) } catch (e) {} ; while (true) {}"),
        Err(EvalError::Exit(4))
    );
    assert_eq!(h.shell.run_input("exit"), Err(EvalError::Exit(0)));
    let interrupt = h.interrupt.clone();
    let trigger = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(200));
        interrupt.trigger();
    });
    let started = std::time::Instant::now();
    assert_eq!(
        h.shell.run_input("while (true) {}"),
        Err(EvalError::Interrupted)
    );
    trigger.join().unwrap();
    let interrupt = h.interrupt.clone();
    let trigger = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(200));
        interrupt.trigger();
    });
    assert_eq!(
        h.shell.run_input("sleep(20000); 1"),
        Err(EvalError::Interrupted)
    );
    trigger.join().unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(h.ok("'still alive'"), "still alive");
}

#[test]
fn abandoned_cursors_are_closed() {
    let h = Harness::start();
    h.server
        .double
        .seed("test.c", (0..10).map(|i| doc! {"_id": i}).collect());
    // A cursor no variable holds any more is collected, and its server cursor killed.
    assert_eq!(h.ok("db.c.find().batchSize(2).next()"), "{ _id: 0 }");
    h.ok("1");
    assert_eq!(h.shell.open_cursors(), 0);
    assert_eq!(h.server.double.killed_cursors().len(), 1);
    // One that is still held stays open.
    h.ok("held = db.c.find().batchSize(2); held.next()");
    h.ok("1");
    assert_eq!(h.shell.open_cursors(), 1);
    assert_eq!(h.ok("held.next()"), "{ _id: 1 }");
    // Closing the shell closes what is left.
    let server_killed_before = h.server.double.killed_cursors().len();
    let Harness {
        shell,
        server,
        runtime,
        ..
    } = h;
    drop(shell);
    assert_eq!(
        server.double.killed_cursors().len(),
        server_killed_before + 1
    );
    drop(server);
    drop(runtime);
}
