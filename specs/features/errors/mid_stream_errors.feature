Feature: Errors in the middle of a stream
  Once tokens have been sent a failure can no longer be an HTTP status: the stream ends
  with one typed error event (its code, a message, whether a retry may succeed) after the
  tokens already delivered, and the engine's slot is freed for the next task.

  Background:
    Given a running llorch with a mock engine whose faults a prompt can ask for

  @ADM-06 @API-04
  Scenario: A stream that goes silent is ended with DECODE_TIMEOUT and its slot is freed
    When I submit a task to an engine that goes silent after 3 tokens
    And I read the task's events
    Then the stream delivered 3 words and ended with the error "DECODE_TIMEOUT"
    And every pool's slots are free again
    When I submit a task to an engine that works
    And I read the task's events
    Then the stream ends with exactly one "end" event with finish reason "length"

  @API-04 @API-06
  Scenario: An engine failure after some tokens ends the stream with ENGINE_ERROR
    When I submit a task to an engine that fails after 3 tokens
    And I read the task's events
    Then the stream delivered 3 words and ended with the error "ENGINE_ERROR"
    And the task's state is "failed"

  @ADP-03
  Scenario: A stream the engine ends without its end marker is a WORKER_RESET, not a success
    When I submit a task to an engine that ends its stream without the end marker
    And I read the task's events
    Then the stream delivered 8 words and ended with the error "WORKER_RESET"
    And the error says a retry may succeed
