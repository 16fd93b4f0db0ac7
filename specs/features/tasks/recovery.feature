Feature: A task outlives the death of a process
  A task llorch accepted reaches exactly one end the client can read, even when the
  engine serving it or the orchestrator itself is killed: a task that had not started
  runs after the restart, and one cut off mid-stream ends with a typed, retriable error.

  Background:
    Given a running llorch with one single-slot pool of the tiny model

  @REL-02 @REL-01
  Scenario: A task whose engine is killed mid-stream ends with a retriable WORKER_RESET
    Given a long task that is streaming tokens
    When the engine serving it is killed
    Then its stream ends with the error "WORKER_RESET", marked retriable
    And the pool is ready again once its engine has restarted

  @REL-03 @REL-01
  Scenario: After the orchestrator crashes the queued task runs and the running one ends typed
    Given a long task that is streaming tokens
    And a task waiting in the queue
    When the orchestrator is killed and started again
    Then the long task ends as failed with the retriable error "ORCHESTRATOR_RESTART"
    And the queued task runs to its end
