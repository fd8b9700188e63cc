import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { MeshIdentity } from '../../lib/client-config.ts';
import { isCmError } from '../../lib/errors.ts';
import { resolvePeer, selectMesh } from '../../lib/select.ts';

function mesh(name: string, meshId: string): MeshIdentity {
  return {
    meshId, name, brokerUrl: 'http://127.0.0.1:7900', role: 'owner', memberName: 'me',
    publicKey: 'a'.repeat(64), secretKey: 'b'.repeat(128), ownerPubkey: null, createdAt: '', status: 'active',
  };
}

function codeOf(work: () => unknown): string | undefined {
  try {
    work();
  } catch (error) {
    return isCmError(error) ? error.code : String(error);
  }
  return undefined;
}

describe('selectMesh', () => {
  const one = { version: 1 as const, meshes: [mesh('team', 'Team_id_0001')] };
  const three = { version: 1 as const, meshes: [mesh('team', 'Team_id_0001'), mesh('dup', 'Dup_id_00001'), mesh('dup', 'Dup_id_00002')] };

  it('takes the only mesh when --mesh is omitted', () => {
    assert.equal(selectMesh(one, undefined).meshId, 'Team_id_0001');
    assert.equal(codeOf(() => selectMesh(three, undefined)), 'CM_ERR_MESH_UNKNOWN');
    assert.equal(codeOf(() => selectMesh({ version: 1, meshes: [] }, undefined)), 'CM_ERR_MESH_UNKNOWN');
  });

  it('matches an id or a unique name', () => {
    assert.equal(selectMesh(three, 'team').meshId, 'Team_id_0001');
    assert.equal(selectMesh(three, 'Dup_id_00002').meshId, 'Dup_id_00002');
    assert.equal(codeOf(() => selectMesh(three, 'dup')), 'CM_ERR_AMBIGUOUS');
    assert.equal(codeOf(() => selectMesh(three, 'nope')), 'CM_ERR_MESH_UNKNOWN');
  });
});

describe('resolvePeer', () => {
  const peers = [
    { name: 'alice', key: `abcd01${'0'.repeat(58)}` },
    { name: 'bob', key: `abcd02${'0'.repeat(58)}` },
    { name: 'cafe', key: `ffff00${'0'.repeat(58)}` },
  ];

  it('prefers an exact name, then a unique key prefix of at least 4 hex', () => {
    assert.equal(resolvePeer('bob', peers, 'member').name, 'bob');
    assert.equal(resolvePeer('cafe', peers, 'member').name, 'cafe');
    assert.equal(resolvePeer('abcd01', peers, 'member').name, 'alice');
    assert.equal(resolvePeer('ABCD02', peers, 'member').name, 'bob');
    assert.equal(codeOf(() => resolvePeer('abcd', peers, 'member')), 'CM_ERR_AMBIGUOUS');
    assert.equal(codeOf(() => resolvePeer('abc', peers, 'member')), 'CM_ERR_PEER_UNKNOWN');
    assert.equal(codeOf(() => resolvePeer('carol', peers, 'member')), 'CM_ERR_PEER_UNKNOWN');
  });

  it('accepts any full key, listed or not', () => {
    const stranger = '9'.repeat(64);
    assert.deepEqual(resolvePeer(stranger, peers, 'member'), { name: '999999999999…', key: stranger });
    assert.equal(resolvePeer(peers[0]?.key ?? '', peers, 'member').name, 'alice');
  });
});
