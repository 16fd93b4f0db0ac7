Feature: Typed errors
  A request llorch cannot serve is refused before anything starts, with an HTTP status,
  one error envelope (code, message, retriable, correlation id) and a message that names
  what was wrong. Nothing is silently truncated or ignored.

  Background:
    Given a running llorch with two ready pools of the tiny model

  @API-07 @ADM-03 @SEC-03 @PLC-02
  Scenario Outline: A bad submission is refused with a typed error naming what was wrong
    When I submit a task whose <fault>
    Then the answer is <status> with error code "<code>"
    And the error envelope carries the answer's correlation id
    And the error message says "<named>"

    Examples:
      | fault                                          | status | code             | named          |
      | model is not in the catalog                    | 404    | MODEL_NOT_FOUND  | no-such-model  |
      | temperature is negative                        | 400    | INVALID_PARAMS   | temperature    |
      | body has a field the API does not know         | 400    | INVALID_PARAMS   | temprature     |
      | pin names a pool that does not exist           | 400    | INVALID_PARAMS   | no-such-pool   |
      | prompt and max_tokens overflow every context   | 400    | CONTEXT_OVERFLOW | context        |
      | body is larger than the configured limit       | 413    | INVALID_PARAMS   | 65536          |

  @API-08
  Scenario: A malformed correlation id is refused and a fresh one is given
    When I submit a completion of 4 tokens with correlation id "not a valid id!"
    Then the answer is 400 with error code "INVALID_PARAMS"
    And the error message says "X-Correlation-Id"
    And the answer carries a freshly generated correlation id
