//! The aggregation tree: which proofs are joined by which recursion node.
//!
//! The shape follows OpenVM's continuation aggregation (and is configuration, not code): leaf
//! nodes join up to `num_children_leaf` adjacent segment proofs; an internal-for-leaf layer joins
//! up to `num_children_internal` leaf proofs; internal-recursive layers repeat until one proof
//! remains; a final wrap node re-proves that single proof to shrink it. Every node covers a
//! contiguous range of segments, and children are always in execution order.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The recursion layer a node belongs to. The names follow OpenVM's layer names.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "kebab-case", tag = "layer", content = "depth")]
pub enum AggLayer {
    /// Verifies segment (app) proofs.
    Leaf,
    /// Verifies leaf proofs.
    InternalForLeaf,
    /// Verifies internal proofs; depth 0 verifies internal-for-leaf proofs, deeper layers verify
    /// proofs of their own circuit.
    InternalRecursive(u32),
    /// Re-proves the single remaining proof once more, as OpenVM's `Sdk::prove` does.
    Wrap,
}

impl fmt::Display for AggLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AggLayer::Leaf => f.write_str("leaf"),
            AggLayer::InternalForLeaf => f.write_str("internal-for-leaf"),
            AggLayer::InternalRecursive(depth) => write!(f, "internal-recursive.{depth}"),
            AggLayer::Wrap => f.write_str("wrap"),
        }
    }
}

/// How many children each kind of node takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct AggTreeShape {
    /// Segment proofs one leaf node joins (OpenVM allows 1 to 4).
    pub num_children_leaf: u32,
    /// Proofs one internal node joins (OpenVM allows 2 to 3).
    pub num_children_internal: u32,
}

impl Default for AggTreeShape {
    /// OpenVM's default: 4 segment proofs per leaf, 3 proofs per internal node.
    fn default() -> Self {
        Self {
            num_children_leaf: 4,
            num_children_internal: 3,
        }
    }
}

/// Why a tree shape or segment count cannot make a tree.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TreeShapeError {
    /// A leaf must join at least one segment.
    #[error("num-children-leaf must be at least 1, got {0}")]
    LeafTooNarrow(u32),
    /// An internal node must join at least two proofs.
    #[error("num-children-internal must be at least 2 (1 would never reduce the tree), got {0}")]
    InternalTooNarrow(u32),
    /// There are no segments to join.
    #[error("a job needs at least one segment")]
    NoSegments,
}

/// What a node aggregates: a segment proof or the proof of a node one layer down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChildRef {
    /// A segment's proof, by the segment's index.
    Segment(u32),
    /// A node of the layer below, by its index in that layer.
    Node(u32),
}

/// One aggregation node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggNode {
    /// The layer the node belongs to.
    pub layer: AggLayer,
    /// Position of the node within its layer, left to right.
    pub index: u32,
    /// Children in execution order.
    pub children: Vec<ChildRef>,
    /// The half-open range of segments this node's proof covers.
    pub covers: (u32, u32),
}

/// All aggregation nodes of a job, layer by layer from the leaves up to the wrap node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggTree {
    /// Segments the tree aggregates.
    pub num_segments: u32,
    /// Nodes per layer, from the leaves up to the wrap node.
    pub layers: Vec<Vec<AggNode>>,
}

impl AggTree {
    /// Plans the tree that joins `num_segments` segment proofs.
    pub fn plan(num_segments: u32, shape: AggTreeShape) -> Result<Self, TreeShapeError> {
        if shape.num_children_leaf < 1 {
            return Err(TreeShapeError::LeafTooNarrow(shape.num_children_leaf));
        }
        if shape.num_children_internal < 2 {
            return Err(TreeShapeError::InternalTooNarrow(
                shape.num_children_internal,
            ));
        }
        if num_segments == 0 {
            return Err(TreeShapeError::NoSegments);
        }

        let segments: Vec<(ChildRef, (u32, u32))> = (0..num_segments)
            .map(|i| (ChildRef::Segment(i), (i, i + 1)))
            .collect();
        let mut layers = vec![group(AggLayer::Leaf, &segments, shape.num_children_leaf)];
        let internal = shape.num_children_internal;
        layers.push(group(
            AggLayer::InternalForLeaf,
            &as_children(layers.last().expect("leaf layer was just pushed")),
            internal,
        ));
        // OpenVM always runs internal-recursive depth 0, then repeats until one proof remains.
        let mut depth = 0;
        loop {
            let below = as_children(layers.last().expect("tree has layers"));
            if depth > 0 && below.len() == 1 {
                break;
            }
            layers.push(group(AggLayer::InternalRecursive(depth), &below, internal));
            depth += 1;
        }
        let below = as_children(layers.last().expect("tree has layers"));
        layers.push(group(AggLayer::Wrap, &below, 1));
        Ok(Self {
            num_segments,
            layers,
        })
    }

    /// Returns the single node at the top of the tree, whose proof is the job's final proof.
    pub fn root(&self) -> &AggNode {
        &self.layers.last().expect("a planned tree has a wrap layer")[0]
    }

    /// Returns the number of aggregation nodes in the whole tree.
    pub fn num_nodes(&self) -> usize {
        self.layers.iter().map(Vec::len).sum()
    }
}

fn as_children(layer: &[AggNode]) -> Vec<(ChildRef, (u32, u32))> {
    layer
        .iter()
        .map(|n| (ChildRef::Node(n.index), n.covers))
        .collect()
}

fn group(layer: AggLayer, children: &[(ChildRef, (u32, u32))], width: u32) -> Vec<AggNode> {
    children
        .chunks(width as usize)
        .enumerate()
        .map(|(index, chunk)| AggNode {
            layer,
            index: index as u32,
            children: chunk.iter().map(|(c, _)| *c).collect(),
            covers: (chunk[0].1 .0, chunk[chunk.len() - 1].1 .1),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer_sizes(n: u32) -> Vec<(String, usize)> {
        AggTree::plan(n, AggTreeShape::default())
            .unwrap()
            .layers
            .iter()
            .map(|l| (l[0].layer.to_string(), l.len()))
            .collect()
    }

    #[test]
    fn one_segment_still_pays_every_layer() {
        // Matches OpenVM: leaf, internal-for-leaf, internal-recursive.0 and the wrap.
        assert_eq!(
            layer_sizes(1),
            vec![
                ("leaf".into(), 1),
                ("internal-for-leaf".into(), 1),
                ("internal-recursive.0".into(), 1),
                ("wrap".into(), 1)
            ]
        );
    }

    #[test]
    fn forty_segments_need_two_recursive_layers() {
        // 40 -> 10 leaves -> 4 ifl -> 2 ir.0 -> 1 ir.1 -> wrap.
        assert_eq!(
            layer_sizes(40),
            vec![
                ("leaf".into(), 10),
                ("internal-for-leaf".into(), 4),
                ("internal-recursive.0".into(), 2),
                ("internal-recursive.1".into(), 1),
                ("wrap".into(), 1)
            ]
        );
    }

    #[test]
    fn every_node_covers_exactly_its_childrens_segments() {
        for n in 1..200 {
            let tree = AggTree::plan(n, AggTreeShape::default()).unwrap();
            assert_eq!(tree.root().covers, (0, n));
            for (pos, layer) in tree.layers.iter().enumerate() {
                // Layer nodes tile [0, n) left to right with no gap or overlap.
                let mut next = 0;
                for node in layer {
                    assert_eq!(node.covers.0, next, "gap before {node:?}");
                    next = node.covers.1;
                    let child_cover: Vec<(u32, u32)> = node
                        .children
                        .iter()
                        .map(|c| match c {
                            ChildRef::Segment(i) => (*i, i + 1),
                            ChildRef::Node(i) => tree.layers[pos - 1][*i as usize].covers,
                        })
                        .collect();
                    assert_eq!(child_cover.first().unwrap().0, node.covers.0);
                    assert_eq!(child_cover.last().unwrap().1, node.covers.1);
                    assert!(child_cover.windows(2).all(|w| w[0].1 == w[1].0));
                }
                assert_eq!(next, n);
            }
        }
    }

    #[test]
    fn degenerate_shapes_are_refused() {
        let narrow = AggTreeShape {
            num_children_leaf: 4,
            num_children_internal: 1,
        };
        assert_eq!(
            AggTree::plan(5, narrow),
            Err(TreeShapeError::InternalTooNarrow(1))
        );
        assert_eq!(
            AggTree::plan(0, AggTreeShape::default()),
            Err(TreeShapeError::NoSegments)
        );
    }
}
