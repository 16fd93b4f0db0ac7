Feature: Sessions
  A conversation can run in a session: its turns go to the pool whose cache is warm for
  it, it has a time to live and a turn limit, optional token budgets, and it can be read
  and deleted.

  Background:
    Given a running llorch with two ready pools of the tiny model

  @API-10 @PLC-03
  Scenario: The turns of a session keep landing on the pool whose cache is warm
    Given a session "conv-bdd" whose first turn ran on pool "tiny-b"
    When I send 2 more turns in session "conv-bdd"
    Then every turn of session "conv-bdd" ran on pool "tiny-b"
    And session "conv-bdd" shows 3 turns, a warm cache on "tiny-b" and time to live left

  @API-10
  Scenario: A deleted session is gone
    Given a session "gone-bdd" with one turn
    When I delete session "gone-bdd"
    Then the deletion is answered 204
    And reading session "gone-bdd" is answered 404

  @API-10
  Scenario: A session expires after its time to live
    Given a session "brief-bdd" with one turn and a time to live of 3000 ms
    Then session "brief-bdd" is gone within 15 seconds

  @API-10
  Scenario: A session past its turn limit is refused
    Given a session "short-bdd" limited to 2 turns that has taken them
    When I send another turn in session "short-bdd"
    Then the answer is 429 with error code "QUOTA_EXCEEDED"
    And the error message says "2 turns"

  @API-10
  Scenario: A session past its token budget is refused
    Given a session "thrifty-bdd" with a budget of 4 tokens that has spent them
    When I send another turn in session "thrifty-bdd"
    Then the answer is 429 with error code "QUOTA_EXCEEDED"
    And the error message says "token budget"
