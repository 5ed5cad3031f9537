/**
 * The primary's questions to its workers (`WorkerQuestions`): each asked worker's reply is its answer, or why it
 * has none (timeout, exited, unsent); answers go to the question of their seq and kind only. Workers here are
 * stand-ins that record what they are sent (the real IPC paths are in test/integration/workers*.test.ts).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { WorkerQuestions, type QuestionedWorker } from '../../src/server/worker-questions.js';

type Question = { t: 'ping'; seq: number };
type Answer = { t: 'pong'; seq: number; n: number } | { t: 'other'; seq: number };

/** A worker stand-in: keeps what it is sent; `fail` makes every send call back with an error. */
function fakeWorker(id: number, fail = false): QuestionedWorker & { sent: Question[] } {
  const sent: Question[] = [];
  return {
    id,
    sent,
    send(message, callback) {
      sent.push(message as Question);
      setImmediate(() => callback(fail ? new Error('channel closed') : null));
      return true;
    },
  };
}

describe('WorkerQuestions', () => {
  test('every asked worker answers: the replies are the answers, in the order asked, each question with its own seq', async () => {
    const questions = new WorkerQuestions<Question, Answer>();
    const [a, b] = [fakeWorker(7), fakeWorker(8)];
    const asking = questions.ask('pong', [{ slot: 1, worker: a }, { slot: 2, worker: b }], (seq) => ({ t: 'ping', seq }), 5_000);
    const seq = a.sent[0]!.seq;
    assert.equal(b.sent[0]!.seq, seq);
    questions.answered(8, { t: 'pong', seq, n: 2 });
    questions.answered(7, { t: 'pong', seq, n: 1 });
    const replies = await asking;
    assert.deepEqual(replies, [
      { slot: 1, reply: { kind: 'answer', answer: { t: 'pong', seq, n: 1 } } },
      { slot: 2, reply: { kind: 'answer', answer: { t: 'pong', seq, n: 2 } } },
    ]);
    const next = questions.ask('pong', [{ slot: 1, worker: a }], (s) => ({ t: 'ping', seq: s }), 5_000);
    assert.notEqual(a.sent[1]!.seq, seq);
    questions.answered(7, { t: 'pong', seq: a.sent[1]!.seq, n: 3 });
    assert.equal((await next)[0]!.reply.kind, 'answer');
  });

  test('a worker that does not answer within the bound replies timeout; one that exited, exited; one not reached, unsent', async () => {
    const questions = new WorkerQuestions<Question, Answer>();
    const [silent, exiting, unreachable] = [fakeWorker(1), fakeWorker(2), fakeWorker(3, true)];
    const started = Date.now();
    const asking = questions.ask('pong', [{ slot: 1, worker: silent }, { slot: 2, worker: exiting }, { slot: 3, worker: unreachable }], (seq) => ({ t: 'ping', seq }), 100);
    questions.gone(2);
    const replies = await asking;
    assert.ok(Date.now() - started >= 90, 'the silent worker was waited for up to the bound');
    assert.deepEqual(
      replies.map(({ slot, reply }) => [slot, reply.kind]),
      [
        [1, 'timeout'],
        [2, 'exited'],
        [3, 'unsent'],
      ],
    );
    const unsent = replies[2]!.reply;
    assert.equal(unsent.kind === 'unsent' && unsent.error.message, 'channel closed');
  });

  test('an answer of another kind, of another seq, from a worker not asked, or after the question ended is dropped', async () => {
    const questions = new WorkerQuestions<Question, Answer>();
    const worker = fakeWorker(1);
    const asking = questions.ask('pong', [{ slot: 1, worker }], (seq) => ({ t: 'ping', seq }), 100);
    const seq = worker.sent[0]!.seq;
    questions.answered(1, { t: 'other', seq });
    questions.answered(1, { t: 'pong', seq: seq + 1, n: 0 });
    questions.answered(2, { t: 'pong', seq, n: 0 });
    const replies = await asking;
    assert.equal(replies[0]!.reply.kind, 'timeout');
    questions.answered(1, { t: 'pong', seq, n: 0 });
    questions.gone(1);
  });

  test('asking no worker resolves at once with no replies', async () => {
    const questions = new WorkerQuestions<Question, Answer>();
    const started = Date.now();
    assert.deepEqual(await questions.ask('pong', [], (seq) => ({ t: 'ping', seq }), 60_000), []);
    assert.ok(Date.now() - started < 1000);
  });
});
