-- The W3C `traceparent` of the span that wrote the event (NULL when traces are
-- not exported): the relay publishes later, in another task, and the event's
-- publish and consumer spans join the trace of the change that caused it.
ALTER TABLE outbox ADD COLUMN trace_context TEXT;
