"""From an accepted record to the sinks: bus, routing, policy, queues, disk log, sink workers."""
