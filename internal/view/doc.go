// Package view renders settle's objects as the API returns them: the
// Session (public and full), the Payments API's Payment and the Exception.
// The functions are pure, so the HTTP handlers and the event log render the
// same bytes for the same state: an event's data.object is what a GET
// would have returned at the moment of the change.
package view
