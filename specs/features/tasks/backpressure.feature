Feature: Back-pressure
  When llorch cannot take a task now it says so at once, with a typed code and a
  Retry-After header telling the client when to try again; it never makes the client hang.

  Background:
    Given a running llorch with one single-slot pool, a queue of one task and a spare pool

  @API-07 @ADM-02
  Scenario: A full queue refuses a new task with 429 and Retry-After
    Given every pool is busy with a long task
    And a task waiting in the queue
    When I submit a completion of 4 tokens
    Then the answer is 429 with error code "ADMISSION_REJECT"
    And the error is retriable and asks to retry after 2500 ms
    And the answer carries the header Retry-After "3"

  @ADM-05 @API-07
  Scenario: A key over its requests per minute gets 429 QUOTA_EXCEEDED with Retry-After
    Given I use a key allowed 1 request per minute
    When I submit a completion of 2 tokens
    Then the answer is 202 with a task id, a queue position and an events URL
    When I submit a completion of 2 tokens
    Then the answer is 429 with error code "QUOTA_EXCEEDED"
    And the answer carries a Retry-After between 1 and 60 seconds

  @API-07 @API-11
  Scenario: A model whose only pool is draining is refused with 503 and Retry-After
    Given the pool "spare" has been drained
    When I submit a completion of 4 tokens of model "spare"
    Then the answer is 503 with error code "POOL_UNREADY"
    And the answer carries a Retry-After between 1 and 60 seconds
