use mongosh_repl
for (let i = 0; i < 30; i++) db.things.insertOne({_id: i})
show dbs
show collections
db.things.find().sort({_id: -1}).limit(2)
db.things.find()
it
db.things.insertOne({_id: 3})
db.runCommand({noSuchCommand: 1})
db.things.countDocuments()
