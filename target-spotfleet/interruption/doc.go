// Package interruption is the intake of EC2 interruption events: EventBridge
// rules deliver Spot interruption warnings, rebalance recommendations and
// instance state changes to an SQS queue; a Watcher long-polls that queue,
// parses each message into an Event, hands it to a Handler and deletes or
// retries the message according to the Handler's Outcome.
//
// What the watcher promises the Handler:
//   - every event it sees was parsed and validated (Parse);
//   - an event id is handed to one Handle call at a time, and an event
//     handled Done or Drop is not handed over again within an hour, even
//     when EventBridge or SQS deliver it twice;
//   - a slow Handle call never delays the next message: each message is
//     handled in its own goroutine, up to Config.MaxInFlight at once;
//   - Handle gets a context that ends after Config.HandleTimeout or when the
//     watcher stops, whichever comes first.
//
// Handling must still be idempotent: the memory of handled events lives in
// this process only, and a message whose deletion failed comes back.
package interruption
