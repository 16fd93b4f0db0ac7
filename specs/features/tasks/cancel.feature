Feature: Cancel a task
  A client can cancel a task it submitted, whether it is still waiting in the queue or
  already streaming; no token is delivered after the cancel is answered.

  Background:
    Given a running llorch with two ready pools of the tiny model

  @API-05
  Scenario: Cancelling a task mid-stream stops its tokens
    Given a long task that is streaming tokens
    When I cancel the task
    Then the cancel is answered 204
    And its stream ends with the error "CANCELLED" and no token follows it
    And the task's state is "cancelled"
    And cancelling the task again is answered 204 too

  @API-05
  Scenario: A queued task that is cancelled never starts
    Given every pool is busy with a long task
    And a task waiting in the queue
    When I cancel the task
    Then the cancel is answered 204
    When the pools are free again
    Then the task's stream holds only the error "CANCELLED"
    And the task never ran on a pool

  @API-05
  Scenario: Cancelling a task that never existed is answered 204
    When I cancel the task "never-existed-bdd"
    Then the cancel is answered 204
