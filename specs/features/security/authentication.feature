Feature: Authentication and roles
  Clients present a bearer API key. A key has a role: a client key runs jobs and reads;
  an admin key may also change the fleet. A refusal is typed and never echoes the key.

  Background:
    Given a running llorch with two ready pools of the tiny model

  @SEC-01 @API-07
  Scenario Outline: A request without a valid key is refused with 401
    Given I use <credentials>
    When I list the pools
    Then the answer is 401 with error code "UNAUTHORIZED"

    Examples:
      | credentials      |
      | no key           |
      | an unknown key   |

  @SEC-05 @SEC-04
  Scenario: A client key runs jobs and reads but may not drain a pool
    Given I use the client key
    When I submit a completion of 4 tokens
    Then the answer is 202 with a task id, a queue position and an events URL
    When I list the pools
    Then the answer is 200
    When I drain the pool "tiny-a"
    Then the answer is 403 with error code "FORBIDDEN"
    And the answer does not contain the key

  @SEC-01 @API-15
  Scenario: The health check needs no key
    Given I use no key
    When I ask whether the orchestrator is alive
    Then the answer is 200
