// Package bot is kontextbot's platform-free core: requests, conversations,
// jobs, quotas and the errors users see. It defines the small interfaces it
// needs (a Generator, a Store, a Scheduler, a Reporter) where it uses
// them; the kontext and store packages satisfy them, and each chat
// platform adapts its events into Requests.
//
// Jobs run by id (see Scheduler): a job is stored when it is accepted, and
// whichever process the scheduler gives it a slot on loads it and continues
// it from its state. LocalScheduler runs them in this process over a
// kontext.Queue; store/postgres.Scheduler shares one queue among every
// process on a database, so several replicas are one bot.
package bot
