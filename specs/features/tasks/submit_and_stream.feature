Feature: Submit a task and stream its tokens
  A client submits a completion or a chat and reads its tokens as server-sent events,
  either from the events URL the submit answers with, or on the submit's own connection.

  Background:
    Given a running llorch with two ready pools of the tiny model

  @API-02 @API-04 @API-06
  Scenario: A submitted task is accepted and its events URL streams it to the end
    When I submit a completion of 24 tokens
    Then the answer is 202 with a task id, a queue position and an events URL
    When I read the task's events
    Then the stream starts with "started" naming the pool, the engine and the model digest
    And token events follow, indexed from 0, every event with a higher id than the last
    And the stream ends with exactly one "end" event counting 24 tokens with finish reason "length"
    And the task's state is "completed" with 24 tokens out

  @API-03 @API-08
  Scenario: One round trip admits and streams the task
    When I submit a completion of 16 tokens asking for an event stream with correlation id "bdd-trace-1"
    Then the answer is an event stream carrying correlation id "bdd-trace-1"
    And token events follow, indexed from 0, every event with a higher id than the last
    And the stream ends with exactly one "end" event counting 16 tokens with finish reason "length"

  @API-02 @WRK-02
  Scenario: A chat is answered through the model's chat template and a stop string ends it
    When I submit a chat of 200 tokens with a system and a user message
    And I read the task's events
    Then the prompt counted more tokens than the messages' words
    When I submit the same chat stopping at a string that its answer contained
    And I read the task's events
    Then the stream ends with exactly one "end" event with finish reason "stop"
    And the text is the first answer up to the stop string

  @REL-04
  Scenario: A client that reconnects with Last-Event-ID gets the rest of the stream
    Given a task of 30 tokens that has ended
    When I read its events again with Last-Event-ID of its second event
    Then I get exactly the events after the second one, with no gap and no duplicate

  @REL-05
  Scenario: Submitting twice with one Idempotency-Key gives one task
    When I submit a completion of 4 tokens with Idempotency-Key "order-bdd-1"
    And I submit the same completion again with Idempotency-Key "order-bdd-1"
    Then both answers name the same task
    When I submit a different completion with Idempotency-Key "order-bdd-1"
    Then the answer is 422 with error code "IDEMPOTENCY_CONFLICT"
